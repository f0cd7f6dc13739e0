package mail

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"
)

// received is one message as the fake server saw it.
type received struct {
	helo     string
	from     string
	rcpt     []string
	data     string
	auth     string // decoded AUTH PLAIN response
	startTLS bool
}

// fakeSMTP is a minimal SMTP server on 127.0.0.1: EHLO/HELO, optional
// AUTH PLAIN and STARTTLS, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
type fakeSMTP struct {
	ln       net.Listener
	auth     bool
	tls      *tls.Config // offer STARTTLS when set
	mu       sync.Mutex
	got      []received
	commands []string
	wg       sync.WaitGroup
}

func newFakeSMTP(t *testing.T, configure func(*fakeSMTP)) *fakeSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSMTP{ln: ln}
	if configure != nil {
		configure(s)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *fakeSMTP) addr() string { return s.ln.Addr().String() }

func (s *fakeSMTP) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

func (s *fakeSMTP) serve(conn net.Conn) {
	defer func() { conn.Close() }()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	reply := func(lines ...string) {
		for _, l := range lines {
			io.WriteString(conn, l+"\r\n")
		}
	}
	var cur received
	reply("220 fake.test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.commands = append(s.commands, line)
		s.mu.Unlock()
		verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch verb {
		case "EHLO":
			cur.helo = strings.TrimPrefix(line[4:], " ")
			ext := []string{"250-fake.test", "250-8BITMIME"}
			if s.tls != nil && !cur.startTLS {
				ext = append(ext, "250-STARTTLS")
			}
			if s.auth {
				ext = append(ext, "250-AUTH PLAIN")
			}
			ext = append(ext, "250 SIZE 1048576")
			reply(ext...)
		case "HELO":
			reply("250 fake.test")
		case "STARTTLS":
			if s.tls == nil {
				reply("502 no")
				continue
			}
			reply("220 go ahead")
			tc := tls.Server(conn, s.tls)
			if err := tc.Handshake(); err != nil {
				return
			}
			conn, r = tc, bufio.NewReader(tc)
			cur = received{startTLS: true}
		case "AUTH":
			f := strings.Fields(line)
			if len(f) != 3 || f[1] != "PLAIN" {
				reply("504 only PLAIN with initial response")
				continue
			}
			b, _ := base64.StdEncoding.DecodeString(f[2])
			cur.auth = string(b)
			reply("235 ok")
		case "MAIL":
			cur.from = strings.Fields(line[len("MAIL FROM:"):])[0] // drop BODY=8BITMIME etc.
			reply("250 ok")
		case "RCPT":
			cur.rcpt = append(cur.rcpt, line[len("RCPT TO:"):])
			reply("250 ok")
		case "DATA":
			reply("354 go ahead")
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				l = strings.TrimPrefix(l, ".") // undo dot-stuffing
				data.WriteString(l)
			}
			cur.data = data.String()
			s.mu.Lock()
			s.got = append(s.got, cur)
			s.mu.Unlock()
			cur = received{helo: cur.helo, startTLS: cur.startTLS}
			reply("250 queued")
		case "RSET":
			cur = received{helo: cur.helo, startTLS: cur.startTLS}
			reply("250 ok")
		case "NOOP":
			reply("250 ok")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("500 unknown command")
		}
	}
}

func newTestSMTP(t *testing.T, addr string, edit func(*SMTPConfig)) *SMTP {
	t.Helper()
	cfg := SMTPConfig{Addr: addr, From: "Domicile Région <no-reply@domicile.test>", Timeout: 5 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	m, err := NewSMTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSMTPSendText(t *testing.T) {
	srv := newFakeSMTP(t, nil)
	m := newTestSMTP(t, srv.addr(), func(c *SMTPConfig) { c.LocalName = "region-eu1.domicile.test" })
	text := "Hello Alice,\n\nverify: https://acme.test/verify?t=abc\n.\n.leading dot\nÜmlaut and a long line " +
		strings.Repeat("x", 200) + "\nend"
	before := time.Now().Add(-time.Second)
	err := m.Send(context.Background(), Message{To: "Alice <alice@acme.test>", Subject: "Verify your address", Text: text})
	if err != nil {
		t.Fatal(err)
	}
	got := srv.messages()
	if len(got) != 1 {
		t.Fatalf("server got %d messages", len(got))
	}
	g := got[0]
	if g.helo != "region-eu1.domicile.test" || g.from != "<no-reply@domicile.test>" || len(g.rcpt) != 1 || g.rcpt[0] != "<alice@acme.test>" {
		t.Fatalf("envelope: helo %q from %q rcpt %q", g.helo, g.from, g.rcpt)
	}
	for i, l := range strings.SplitAfter(g.data, "\n") {
		if l != "" && !strings.HasSuffix(l, "\r\n") {
			t.Fatalf("line %d has a bare LF: %q", i, l)
		}
		if len(l) > 78 {
			t.Fatalf("line %d longer than 78 octets: %q", i, l)
		}
	}
	msg, err := mail.ReadMessage(strings.NewReader(g.data))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Header
	from, err := h.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Name != "Domicile Région" || from[0].Address != "no-reply@domicile.test" {
		t.Fatalf("From %q: %v %v", h.Get("From"), from, err)
	}
	if to, err := h.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "alice@acme.test" || to[0].Name != "Alice" {
		t.Fatalf("To %q: %v", h.Get("To"), err)
	}
	if h.Get("Subject") != "Verify your address" {
		t.Fatalf("Subject %q", h.Get("Subject"))
	}
	date, err := h.Date()
	if err != nil || date.Before(before) || date.After(time.Now().Add(time.Second)) {
		t.Fatalf("Date %q: %v", h.Get("Date"), err)
	}
	if id := h.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@domicile.test>") || len(id) < 20 {
		t.Fatalf("Message-ID %q", id)
	}
	if h.Get("Mime-Version") != "1.0" || h.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Fatalf("MIME headers %v", h)
	}
	if mt, params, _ := mime.ParseMediaType(h.Get("Content-Type")); mt != "text/plain" || params["charset"] != "utf-8" {
		t.Fatalf("Content-Type %q", h.Get("Content-Type"))
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.ReplaceAll(text, "\n", "\r\n") + "\r\n"; string(body) != want {
		t.Fatalf("body\n%q\nwant\n%q", body, want)
	}
}

func TestSMTPSendMultipartAndEncodedSubject(t *testing.T) {
	srv := newFakeSMTP(t, nil)
	m := newTestSMTP(t, srv.addr(), nil)
	subject := "Passwort zurücksetzen – " + strings.Repeat("sehr lang ", 12)
	html := `<p>Hallo, <a href="https://acme.test/reset?t=1&amp;u=2">zurücksetzen</a></p>`
	if err := m.Send(context.Background(), Message{To: "bob@acme.test", Subject: subject, Text: "Hallo\nhttps://acme.test/reset?t=1&u=2", HTML: html}); err != nil {
		t.Fatal(err)
	}
	g := srv.messages()[0]
	msg, err := mail.ReadMessage(strings.NewReader(g.data))
	if err != nil {
		t.Fatal(err)
	}
	dec := new(mime.WordDecoder)
	gotSubject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || gotSubject != subject {
		t.Fatalf("Subject %q decodes to %q (%v), want %q", msg.Header.Get("Subject"), gotSubject, err, subject)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" || params["boundary"] == "" {
		t.Fatalf("Content-Type %q", msg.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []string
	for {
		p, err := mr.NextPart() // decodes quoted-printable
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		parts = append(parts, ct+"|"+string(b))
	}
	want := []string{
		"text/plain|Hallo\r\nhttps://acme.test/reset?t=1&u=2\r\n",
		"text/html|" + html + "\r\n",
	}
	if len(parts) != 2 || parts[0] != want[0] || parts[1] != want[1] {
		t.Fatalf("parts\n%q\nwant\n%q", parts, want)
	}
}

func TestSMTPRefusesHeaderInjection(t *testing.T) {
	srv := newFakeSMTP(t, nil)
	m := newTestSMTP(t, srv.addr(), nil)
	for _, msg := range []Message{
		{To: "alice@acme.test\r\nBcc: eve@evil.test", Subject: "hi", Text: "x"},
		{To: "alice@acme.test\nBcc: eve@evil.test", Subject: "hi", Text: "x"},
		{To: "alice@acme.test", Subject: "hi\r\nBcc: eve@evil.test", Text: "x"},
		{To: "alice@acme.test", Subject: "hi\rX-Evil: 1", Text: "x"},
		{To: "alice@acme.test", Subject: "hi\x00", Text: "x"},
	} {
		if err := m.Send(context.Background(), msg); !errors.Is(err, ErrHeaderInjection) {
			t.Errorf("Send(%q, %q) = %v, want ErrHeaderInjection", msg.To, msg.Subject, err)
		}
	}
	for _, msg := range []Message{
		{To: "", Subject: "hi", Text: "x"},
		{To: "not an address", Subject: "hi", Text: "x"},
		{To: "a@acme.test, b@acme.test", Subject: "hi", Text: "x"},
		{To: "alice@acme.test", Subject: "hi"},
		{To: "alice@acme.test", Subject: strings.Repeat("s", 1000), Text: "x"},
	} {
		if err := m.Send(context.Background(), msg); err == nil {
			t.Errorf("Send(%+v) = nil, want an error", msg)
		}
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.commands) != 0 {
		t.Fatalf("refused messages reached the server: %q", srv.commands)
	}
}

func TestSMTPAuthPlain(t *testing.T) {
	srv := newFakeSMTP(t, func(s *fakeSMTP) { s.auth = true })
	m := newTestSMTP(t, srv.addr(), func(c *SMTPConfig) { c.Username, c.Password = "region", "s3cret" })
	if err := m.Send(context.Background(), Message{To: "a@acme.test", Subject: "s", Text: "t"}); err != nil {
		t.Fatal(err)
	}
	if got := srv.messages()[0].auth; got != "\x00region\x00s3cret" {
		t.Fatalf("AUTH PLAIN %q", got)
	}
	// A server that does not offer AUTH is an error, not a silent
	// unauthenticated send.
	plain := newFakeSMTP(t, nil)
	m = newTestSMTP(t, plain.addr(), func(c *SMTPConfig) { c.Username, c.Password = "region", "s3cret" })
	if err := m.Send(context.Background(), Message{To: "a@acme.test", Subject: "s", Text: "t"}); err == nil || len(plain.messages()) != 0 {
		t.Fatalf("send without AUTH = %v", err)
	}
}

func TestSMTPStartTLS(t *testing.T) {
	// httptest's certificate is valid for 127.0.0.1.
	ts := httptest.NewTLSServer(nil)
	defer ts.Close()
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	srv := newFakeSMTP(t, func(s *fakeSMTP) {
		s.auth = true
		s.tls = &tls.Config{Certificates: ts.TLS.Certificates}
	})
	m := newTestSMTP(t, srv.addr(), func(c *SMTPConfig) {
		c.Username, c.Password = "region", "s3cret"
		c.TLSConfig = &tls.Config{RootCAs: pool}
		c.RequireTLS = true
	})
	if err := m.Send(context.Background(), Message{To: "a@acme.test", Subject: "s", Text: "t"}); err != nil {
		t.Fatal(err)
	}
	g := srv.messages()[0]
	if !g.startTLS || g.auth != "\x00region\x00s3cret" {
		t.Fatalf("startTLS %v auth %q", g.startTLS, g.auth)
	}
	// Without the CA the certificate is refused.
	m = newTestSMTP(t, srv.addr(), nil)
	if err := m.Send(context.Background(), Message{To: "a@acme.test", Subject: "s", Text: "t"}); err == nil {
		t.Fatal("STARTTLS with an unknown CA succeeded")
	}
	// RequireTLS with a server that does not offer STARTTLS.
	plain := newFakeSMTP(t, nil)
	m = newTestSMTP(t, plain.addr(), func(c *SMTPConfig) { c.RequireTLS = true })
	if err := m.Send(context.Background(), Message{To: "a@acme.test", Subject: "s", Text: "t"}); err == nil {
		t.Fatal("RequireTLS sent over plain text")
	}
}

func TestSMTPTimeoutAndCancel(t *testing.T) {
	// A server that accepts and never greets.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	msg := Message{To: "a@acme.test", Subject: "s", Text: "t"}

	m := newTestSMTP(t, ln.Addr().String(), func(c *SMTPConfig) { c.Timeout = 200 * time.Millisecond })
	start := time.Now()
	if err := m.Send(context.Background(), msg); err == nil {
		t.Fatal("send to a silent server succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timeout took %v", d)
	}

	m = newTestSMTP(t, ln.Addr().String(), nil) // 5s timeout
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	err = m.Send(ctx, msg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled send = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

func TestSMTPConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  SMTPConfig
		want []string
	}{
		{SMTPConfig{}, []string{"mail.smtp.addr: required", "mail.smtp.from: required"}},
		{SMTPConfig{Addr: "smtp.acme.test", From: "a@acme.test"}, []string{"mail.smtp.addr: want host:port"}},
		{SMTPConfig{Addr: "smtp.acme.test:0", From: "a@acme.test"}, []string{"mail.smtp.addr: want host:port with a port"}},
		{SMTPConfig{Addr: ":587", From: "a@acme.test"}, []string{"mail.smtp.addr:"}},
		{SMTPConfig{Addr: "smtp.acme.test:587", From: "nobody"}, []string{"mail.smtp.from:"}},
		{SMTPConfig{Addr: "smtp.acme.test:587", From: "a@acme.test\r\nBcc: e@evil.test"}, []string{"mail.smtp.from: line break"}},
		{SMTPConfig{Addr: "smtp.acme.test:587", From: "a@acme.test", Username: "u"}, []string{"mail.smtp.password: required when mail.smtp.username is set"}},
		{SMTPConfig{Addr: "smtp.acme.test:587", From: "a@acme.test", Password: "p"}, []string{"mail.smtp.username: required when"}},
		{SMTPConfig{Addr: "smtp.acme.test:587", From: "a@acme.test", Timeout: -1}, []string{"mail.smtp.timeout: must not be negative"}},
		{SMTPConfig{Addr: "smtp.acme.test:587", From: "Domicile <a@acme.test>", Username: "u", Password: "p"}, nil},
		{SMTPConfig{Addr: "[::1]:25", From: "a@acme.test"}, nil},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if len(tt.want) == 0 {
			if err != nil {
				t.Errorf("Validate(%+v) = %v", tt.cfg, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("Validate(%+v) = nil, want %q", tt.cfg, tt.want)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Validate(%+v) = %q, want it to contain %q", tt.cfg, err, w)
			}
		}
		if _, nerr := NewSMTP(tt.cfg); nerr == nil {
			t.Errorf("NewSMTP accepted %+v", tt.cfg)
		}
	}
}

func TestFold(t *testing.T) {
	long := "Subject: " + strings.Repeat("word ", 40) + strings.Repeat("y", 100)
	f := fold(long)
	for _, l := range strings.Split(f, "\r\n") {
		if len(l) > 78 && strings.Contains(strings.TrimSpace(l), " ") {
			t.Fatalf("line too long: %q", l)
		}
		if strings.TrimSpace(l) == "" {
			t.Fatalf("whitespace-only line in %q", f)
		}
	}
	if strings.ReplaceAll(f, "\r\n", "") != long {
		t.Fatal("unfolding does not give the original line")
	}
}

func TestRedactAddress(t *testing.T) {
	for in, want := range map[string]string{
		"alice@acme.de":                 "a***@acme.de",
		"Alice Example <alice@acme.de>": "a***@acme.de",
		"élodie@acme.fr":                "é***@acme.fr",
		"a@b.c":                         "a***@b.c",
		"not an address":                "***",
		"":                              "***",
	} {
		if got := RedactAddress(in); got != want {
			t.Errorf("RedactAddress(%q) = %q, want %q", in, got, want)
		}
	}
}
