package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// AuditEvent is one entry of the region's append-only audit log.
//
// The log is kept after a user is deleted, so it must hold no personal
// data: callers pass user ids as Actor and Subject, never emails or names,
// and Detail holds ids, codes and outcomes, never profile values. IP is the
// client address the action came from, kept for security investigations.
type AuditEvent struct {
	// Seq is the entry's position in the log (1, 2, 3, ...), set by the
	// store; AppendAudit ignores it.
	Seq int64 `json:"seq"`
	// Actor is who acted: a user id, "admin:<id>", "system", ...
	Actor string `json:"actor"`
	// Action is what happened, e.g. "user.login_failed"; required.
	Action string `json:"action"`
	// Subject is the id of the user (or other thing) acted on; AuditFor
	// finds entries by it.
	Subject string `json:"subject"`
	IP      string `json:"ip,omitempty"`
	// At is when it happened, to the microsecond in UTC; AppendAudit sets
	// it to now when it is zero.
	At     time.Time         `json:"at"`
	Detail map[string]string `json:"detail,omitempty"`
}

// Limits on an audit event.
const (
	maxAuditField   = 256  // Actor, Action, Subject, IP
	maxAuditDetail  = 32   // entries
	maxAuditDetailK = 64   // key bytes
	maxAuditDetailV = 1024 // value bytes
)

// ErrTampered is wrapped by VerifyAudit's error when the log is not the
// chain AppendAudit wrote.
var ErrTampered = errors.New("audit log tampered with")

// AuditError names the first audit entry that fails verification.
type AuditError struct {
	Seq    int64
	Reason string
}

func (e *AuditError) Error() string {
	return fmt.Sprintf("seq %d: %s: %v", e.Seq, e.Reason, ErrTampered)
}

// Unwrap returns ErrTampered.
func (e *AuditError) Unwrap() error { return ErrTampered }

// canonicalEvent is the encoding an entry's hash covers: JSON with the
// fields in this order, the detail keys sorted (as encoding/json does), the
// time fixed-width in UTC. Its seq binds the entry to its position.
type canonicalEvent struct {
	V       int               `json:"v"`
	Seq     int64             `json:"seq"`
	Actor   string            `json:"actor"`
	Action  string            `json:"action"`
	Subject string            `json:"subject"`
	IP      string            `json:"ip"`
	At      string            `json:"at"`
	Detail  map[string]string `json:"detail"`
}

const auditTimeFormat = "2006-01-02T15:04:05.000000Z"

func canonical(e AuditEvent) ([]byte, error) {
	detail := e.Detail
	if detail == nil {
		detail = map[string]string{}
	}
	return json.Marshal(canonicalEvent{V: 1, Seq: e.Seq, Actor: e.Actor, Action: e.Action, Subject: e.Subject,
		IP: e.IP, At: e.At.UTC().Format(auditTimeFormat), Detail: detail})
}

func decodeEvent(data []byte) (AuditEvent, error) {
	var c canonicalEvent
	if err := json.Unmarshal(data, &c); err != nil {
		return AuditEvent{}, err
	}
	if c.V != 1 {
		return AuditEvent{}, fmt.Errorf("event version %d unknown", c.V)
	}
	at, err := time.Parse(auditTimeFormat, c.At)
	if err != nil {
		return AuditEvent{}, err
	}
	e := AuditEvent{Seq: c.Seq, Actor: c.Actor, Action: c.Action, Subject: c.Subject, IP: c.IP, At: at.UTC(), Detail: c.Detail}
	if len(e.Detail) == 0 {
		e.Detail = nil
	}
	return e, nil
}

func chainHash(prev, event []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(event)
	return h.Sum(nil)
}

func checkAuditEvent(e AuditEvent) error {
	if e.Action == "" {
		return errors.New("action: empty")
	}
	for name, v := range map[string]string{"actor": e.Actor, "action": e.Action, "subject": e.Subject, "ip": e.IP} {
		if len(v) > maxAuditField || !utf8.ValidString(v) {
			return fmt.Errorf("%s: want valid UTF-8 of at most %d bytes", name, maxAuditField)
		}
	}
	if len(e.Detail) > maxAuditDetail {
		return fmt.Errorf("detail: more than %d entries", maxAuditDetail)
	}
	for k, v := range e.Detail {
		if k == "" || len(k) > maxAuditDetailK || !utf8.ValidString(k) {
			return fmt.Errorf("detail: key: want valid UTF-8 of 1 to %d bytes", maxAuditDetailK)
		}
		if len(v) > maxAuditDetailV || !utf8.ValidString(v) {
			return fmt.Errorf("detail: %s: want valid UTF-8 of at most %d bytes", k, maxAuditDetailV)
		}
	}
	return nil
}

// AppendAudit appends e to the audit log and returns its seq. Each entry
// stores its canonical encoding, the previous entry's hash and its own,
// SHA-256(prev_hash || canonical); the first entry's prev_hash is 32 zero
// bytes. Appends are serialised on the audit_head row, which holds the last
// seq and hash: it is read FOR UPDATE (under READ COMMITTED on PostgreSQL,
// so a waiting append reads the head its predecessor wrote instead of
// failing), and SQLite transactions hold the write lock from BEGIN, so
// concurrent appends never fork the chain or leave a gap.
//
// The log must not hold personal data: see AuditEvent.
func (db *DB) AppendAudit(ctx context.Context, e AuditEvent) (int64, error) {
	if err := checkAuditEvent(e); err != nil {
		return 0, fmt.Errorf("store: append audit: %w", err)
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	e.At = e.At.UTC().Truncate(time.Microsecond)
	var seq int64
	err := db.chain.Tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var prev []byte
		if err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`+db.d.forUpdate).Scan(&seq, &prev); err != nil {
			return fmt.Errorf("read head: %w", err)
		}
		seq++
		e.Seq = seq
		event, err := canonical(e)
		if err != nil {
			return err
		}
		hash := chainHash(prev, event)
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log (seq, subject, event, prev_hash, hash) VALUES ($1, $2, $3, $4, $5)`,
			seq, e.Subject, event, prev, hash); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, seq, hash)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: append audit: %w", err)
	}
	return seq, nil
}

// VerifyAudit walks the audit log from seq 1 and checks that it is the chain
// AppendAudit wrote: seqs without gaps, each prev_hash equal to the previous
// entry's hash, each hash equal to SHA-256(prev_hash || event), each event
// naming its own seq and subject, and the last entry matching audit_head. It
// returns the number of entries that passed; if one did not (modified,
// deleted, inserted or reordered), its error wraps an *AuditError naming the
// first bad seq, and ErrTampered.
//
// A chain only proves the entries are consistent with each other: someone
// able to rewrite the whole log and the head from some point on can forge a
// consistent one. Recording the head (AuditHead) elsewhere from time to
// time, and checking it is still a prefix, closes that gap.
func (db *DB) VerifyAudit(ctx context.Context) (int, error) {
	// The head first: entries appended after it are not checked, and
	// those up to it can no longer change.
	headSeq, headHash, err := db.AuditHead(ctx)
	if err != nil {
		return 0, fmt.Errorf("store: verify audit: %w", err)
	}
	rows, err := db.db.QueryContext(ctx, `SELECT seq, subject, event, prev_hash, hash FROM audit_log WHERE seq <= $1 ORDER BY seq`, headSeq)
	if err != nil {
		return 0, fmt.Errorf("store: verify audit: %w", err)
	}
	defer rows.Close()
	var (
		checked int
		want    int64 = 1
		prev          = make([]byte, sha256.Size)
	)
	fail := func(seq int64, reason string, args ...any) (int, error) {
		return checked, fmt.Errorf("store: verify audit: %w", &AuditError{Seq: seq, Reason: fmt.Sprintf(reason, args...)})
	}
	for rows.Next() {
		var (
			seq                         int64
			subject                     string
			event, prevHash, storedHash []byte
		)
		if err := rows.Scan(&seq, &subject, &event, &prevHash, &storedHash); err != nil {
			return checked, fmt.Errorf("store: verify audit: %w", err)
		}
		switch {
		case seq < want: // only if seq were not unique
			return fail(seq, "duplicate entry")
		case seq > want:
			return fail(want, "entry missing (the next is seq %d)", seq)
		case !bytes.Equal(prevHash, prev):
			return fail(seq, "prev_hash does not match the hash of seq %d (an entry was removed, inserted or rewritten)", seq-1)
		case !bytes.Equal(storedHash, chainHash(prevHash, event)):
			return fail(seq, "hash does not match the entry (entry modified)")
		}
		e, err := decodeEvent(event)
		switch {
		case err != nil:
			return fail(seq, "event does not decode: %v", err)
		case e.Seq != seq:
			return fail(seq, "event is seq %d's (entries reordered)", e.Seq)
		case e.Subject != subject:
			return fail(seq, "subject column does not match the event")
		}
		prev = storedHash
		want++
		checked++
	}
	if err := rows.Err(); err != nil {
		return checked, fmt.Errorf("store: verify audit: %w", err)
	}
	if want-1 != headSeq {
		return fail(want, "entry missing (the head is at seq %d)", headSeq)
	}
	if !bytes.Equal(prev, headHash) {
		return fail(headSeq, "hash does not match the head's")
	}
	return checked, nil
}

// AuditHead returns the seq and hash of the last audit entry (0 and 32 zero
// bytes for an empty log). Publishing it elsewhere anchors the chain.
func (db *DB) AuditHead(ctx context.Context) (seq int64, hash []byte, err error) {
	if err := db.db.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash); err != nil {
		return 0, nil, fmt.Errorf("store: audit head: %w", err)
	}
	return seq, hash, nil
}

// AuditFor returns the audit entries whose subject is subject, oldest
// first. It does not verify the chain (VerifyAudit does).
func (db *DB) AuditFor(ctx context.Context, subject string) ([]AuditEvent, error) {
	events, err := auditFor(ctx, db.db, subject)
	if err != nil {
		return nil, fmt.Errorf("store: audit for %s: %w", subject, err)
	}
	return events, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func auditFor(ctx context.Context, q querier, subject string) ([]AuditEvent, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, event FROM audit_log WHERE subject = $1 ORDER BY seq`, subject)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var events []AuditEvent
	for rows.Next() {
		var (
			seq   int64
			event []byte
		)
		if err := rows.Scan(&seq, &event); err != nil {
			return nil, err
		}
		e, err := decodeEvent(event)
		if err != nil {
			return nil, fmt.Errorf("seq %d: %w", seq, err)
		}
		e.Seq = seq
		events = append(events, e)
	}
	return events, rows.Err()
}
