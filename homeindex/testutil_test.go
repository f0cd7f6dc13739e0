package homeindex

import "io"

type memSink struct {
	buf    []byte
	closed bool
}

func (m *memSink) Write(p []byte) (int, error) { m.buf = append(m.buf, p...); return len(p), nil }
func (m *memSink) Close() error                { m.closed = true; return nil }
func (m *memSink) ID() string                  { return "mem" }
func (m *memSink) Cancel() error               { return nil }

type readCloser struct{ s *memSink }

func (r readCloser) Read(p []byte) (int, error) {
	if len(r.s.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.s.buf)
	r.s.buf = r.s.buf[n:]
	return n, nil
}
func (r readCloser) Close() error { return nil }
