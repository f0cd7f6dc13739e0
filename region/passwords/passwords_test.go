package passwords

import (
	"crypto/rand"
	"runtime"
	"strings"
	"testing"
)

func TestCommonRefusesKnownEntries(t *testing.T) {
	for _, pw := range []string{
		"password", "123456", "qwerty", "iloveyou", "12345678", "letmein", "trustno1",
		"PASSWORD", "Password", "QwErTy", "  password", "iloveyou\t", "\r\n123456 ",
	} {
		if !Common(pw) {
			t.Errorf("Common(%q) = false, want true", pw)
		}
	}
}

func TestCommonAcceptsOthers(t *testing.T) {
	for range 20 {
		if pw := rand.Text()[:20]; Common(pw) {
			t.Errorf("Common(%q) = true for a random string", pw)
		}
	}
	for _, pw := range []string{
		"", " ", "password1234567890x", "pass word", "passwordpassword",
		"correct horse battery staple", strings.Repeat("a", 10000),
		"pässwörd-lång", // non-ASCII goes through strings.ToLower
	} {
		if Common(pw) {
			t.Errorf("Common(%q) = true, want false", pw)
		}
	}
}

func TestCommonUnicodeFolding(t *testing.T) {
	// U+212A KELVIN SIGN lower-cases to ASCII 'k'; "killer" is on the list.
	if !Common("killer") {
		t.Skip("list changed: killer is not on it")
	}
	if !Common("\u212Ailler") {
		t.Error(`Common("\u212Ailler") = false; want true after lower-casing`)
	}
}

func TestListSize(t *testing.T) {
	if n := Len(); n < 10000 {
		t.Fatalf("deny list has %d entries, want at least 10000", n)
	}
	s := load()
	t.Logf("%d entries, longest %d bytes; blob %d B + table %d slots × 4 B = %d B",
		s.n, s.maxLen, len(s.blob), len(s.slots), len(s.blob)+4*len(s.slots))
}

func TestBuild(t *testing.T) {
	s := build("Foo\r\nfoo\n  bar  \n\n" + strings.Repeat("x", 256) + "\nBAZ")
	if s.n != 3 {
		t.Fatalf("n = %d, want 3 (foo, bar, baz)", s.n)
	}
	for _, k := range []string{"foo", "FOO", "bar", "baz"} {
		if !s.has(k) {
			t.Errorf("has(%q) = false", k)
		}
	}
	for _, k := range []string{"fo", "fooo", "ba", "", " bar", strings.Repeat("x", 256)} {
		if s.has(k) {
			t.Errorf("has(%q) = true", k)
		}
	}
}

// BenchmarkLoad builds the set from the embedded gzip file and reports the
// heap it keeps (B-retained).
func BenchmarkLoad(b *testing.B) {
	load() // keep the global out of the measurement
	var keep *set
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for b.Loop() {
		keep = build(string(mustGunzip(b)))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(len(keep.blob)+4*len(keep.slots)), "B-set")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)), "B-retained")
	runtime.KeepAlive(keep)
}

func BenchmarkCommon(b *testing.B) {
	load()
	cases := map[string]string{
		"hit":      "iloveyou",
		"hitUpper": "ILoveYou",
		"miss":     "Tr0ub4dor&3-correct",
		"unicode":  "pässwörd-lång",
	}
	for name, pw := range cases {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Common(pw)
			}
		})
	}
}

func mustGunzip(tb testing.TB) []byte {
	raw, err := gunzip(listGz)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}
