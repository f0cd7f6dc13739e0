package homeindex

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/domicile/domicile/deploy/dev"
	"github.com/domicile/domicile/homeindex/table"
)

// fileSink is a raft.SnapshotSink over a plain file.
type fileSink struct{ *os.File }

func (f fileSink) ID() string    { return "bench" }
func (f fileSink) Cancel() error { return f.File.Close() }

// BenchmarkSnapshot10M writes a snapshot of 10 million entries to disk and
// restores it, reporting bytes on disk per entry and the restore time.
func BenchmarkSnapshot10M(b *testing.B) {
	if testing.Short() {
		b.Skip("10M entries")
	}
	const n = 10_000_000
	f := newFSM()
	if err := f.setPolicy(1, dev.Policy); err != nil {
		b.Fatal(err)
	}
	rid, _ := f.regionID("eu-west")
	t := f.tbl.Load()
	var k Key
	for i := range n {
		binary.BigEndian.PutUint64(k[:8], uint64(i)*0x9E3779B97F4A7C15)
		binary.BigEndian.PutUint64(k[8:], uint64(i))
		t.Put(k, tableValue(rid, uint32(i), uint64(i+1)))
	}
	path := filepath.Join(b.TempDir(), "snap")
	b.ResetTimer()
	for b.Loop() {
		out, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		if err := snap.Persist(fileSink{out}); err != nil {
			b.Fatal(err)
		}
		snap.Release()
		persist := time.Since(start)
		st, _ := os.Stat(path)
		in, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		g := newFSM()
		start = time.Now()
		if err := g.Restore(in); err != nil {
			b.Fatal(err)
		}
		restore := time.Since(start)
		if g.len() != n {
			b.Fatalf("restored %d entries", g.len())
		}
		b.ReportMetric(float64(st.Size())/n, "disk-B/entry")
		b.ReportMetric(persist.Seconds(), "persist-s")
		b.ReportMetric(restore.Seconds(), "restore-s")
	}
}

func tableValue(region uint16, version uint32, owner uint64) table.Value {
	return table.Value{Region: region, Version: version, Owner: owner}
}
