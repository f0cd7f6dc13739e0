// Package mail sends the region's transactional e-mail (verification and
// password-reset links): an SMTP mailer for production and an in-memory
// Outbox for development and tests, both behind the Mailer interface.
package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
)

// Message is one e-mail to one recipient. Text is the plain-text body; HTML,
// if set, is sent as an alternative to it.
type Message struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html,omitempty"`
}

// Mailer sends messages.
type Mailer interface {
	Send(ctx context.Context, m Message) error
}

// ErrHeaderInjection is returned for a recipient or subject that holds a
// line break (or another control character), which could smuggle headers
// into the message.
var ErrHeaderInjection = errors.New("mail: line break or control character in a header field")

// maxSubjectLen bounds the subject (bytes) so headers stay well under the
// 998-octet line limit before folding.
const maxSubjectLen = 900

// validate checks m and returns its parsed recipient.
func (m Message) validate() (*mail.Address, error) {
	if hasControl(m.To) || hasControl(m.Subject) {
		return nil, ErrHeaderInjection
	}
	if m.To == "" {
		return nil, errors.New("mail: message has no recipient")
	}
	to, err := mail.ParseAddress(m.To)
	if err != nil {
		return nil, fmt.Errorf("mail: recipient: %w", err)
	}
	if len(m.Subject) > maxSubjectLen {
		return nil, fmt.Errorf("mail: subject longer than %d bytes", maxSubjectLen)
	}
	if m.Text == "" && m.HTML == "" {
		return nil, errors.New("mail: message has no body")
	}
	return to, nil
}

// hasControl reports a C0 control character (CR, LF, NUL, ...) or DEL;
// tab is allowed.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return true
		}
	}
	return false
}

// compose renders m as an RFC 5322 message with CRLF line endings: Date,
// Message-ID, From, To, Subject (RFC 2047-encoded when not ASCII), and a
// quoted-printable UTF-8 text/plain body, or multipart/alternative
// (text/plain then text/html) when m.HTML is set.
func compose(from, to *mail.Address, m Message, now time.Time) ([]byte, error) {
	var buf bytes.Buffer
	header := func(name, value string) {
		buf.WriteString(fold(name + ": " + value))
		buf.WriteString("\r\n")
	}
	id, err := messageID(from.Address)
	if err != nil {
		return nil, err
	}
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", id)
	header("From", from.String())
	header("To", to.String())
	header("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	header("MIME-Version", "1.0")
	header("Auto-Submitted", "auto-generated")

	if m.HTML == "" {
		header("Content-Type", "text/plain; charset=utf-8")
		header("Content-Transfer-Encoding", "quoted-printable")
		buf.WriteString("\r\n")
		if err := writeQP(&buf, m.Text); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	header("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()}))
	buf.WriteString("\r\n")
	for _, part := range []struct{ typ, content string }{
		{"text/plain; charset=utf-8", m.Text},
		{"text/html; charset=utf-8", m.HTML},
	} {
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.typ},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		if err := writeQP(w, part.content); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	buf.Write(body.Bytes())
	return buf.Bytes(), nil
}

// writeQP writes s quoted-printable with CRLF line breaks (LF and CRLF in s
// both become CRLF) and ends with a line break.
func writeQP(w interface{ Write([]byte) (int, error) }, s string) error {
	qp := quotedprintable.NewWriter(w)
	s = strings.ReplaceAll(s, "\r\n", "\n")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	if _, err := qp.Write([]byte(s)); err != nil {
		return err
	}
	return qp.Close()
}

// messageID is <random@domain of the sender>.
func messageID(from string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	domain := "localhost"
	if at := strings.LastIndexByte(from, '@'); at >= 0 && at < len(from)-1 {
		domain = from[at+1:]
	}
	return "<" + hex.EncodeToString(b[:]) + "@" + domain + ">", nil
}

// fold folds a header line at spaces so that lines stay under 78 octets
// where possible (RFC 5322 2.2.3); a word longer than that stays whole.
func fold(line string) string {
	const limit = 76
	if len(line) <= limit {
		return line
	}
	var b strings.Builder
	cur := 0 // length of the current output line
	for i, word := range strings.Split(line, " ") {
		if i > 0 {
			// Never fold right after "Name:" or on a line holding only
			// the folding space.
			if cur+1+len(word) > limit && i > 1 && cur > 1 {
				b.WriteString("\r\n ")
				cur = 1
			} else {
				b.WriteByte(' ')
				cur++
			}
		}
		b.WriteString(word)
		cur += len(word)
	}
	return b.String()
}

// RedactAddress shortens an e-mail address for logs: "alice@acme.de"
// becomes "a***@acme.de". A display name is dropped; anything that does
// not parse becomes "***".
func RedactAddress(addr string) string {
	a, err := mail.ParseAddress(addr)
	if err != nil {
		return "***"
	}
	at := strings.LastIndexByte(a.Address, '@')
	if at <= 0 {
		return "***"
	}
	local, domain := a.Address[:at], a.Address[at+1:]
	first := []rune(local)[0]
	return string(first) + "***@" + domain
}
