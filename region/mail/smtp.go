package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/smtp"
	"strconv"
	"time"
)

// SMTPConfig configures the SMTP mailer; the field names in errors are the
// region's configuration keys (mail.smtp.*).
type SMTPConfig struct {
	// Addr is the submission server, host:port (e.g. "smtp.acme.de:587").
	Addr string
	// From is the sender, an RFC 5322 address ("Domicile <no-reply@acme.de>").
	From string
	// Username and Password, if set, authenticate with AUTH PLAIN. net/smtp
	// refuses to send them over a connection that is not TLS unless the
	// server is on localhost.
	Username string
	Password string
	// Timeout bounds the whole exchange (dial, STARTTLS, send); default 30s.
	// A context deadline that comes earlier wins.
	Timeout time.Duration
	// LocalName is the name sent in EHLO; default "localhost".
	LocalName string
	// TLSConfig, optional, is used for STARTTLS; ServerName defaults to the
	// host of Addr. STARTTLS is used whenever the server offers it.
	TLSConfig *tls.Config
	// RequireTLS refuses to send when the server does not offer STARTTLS.
	RequireTLS bool
}

// DefaultSMTPTimeout is SMTPConfig.Timeout when unset.
const DefaultSMTPTimeout = 30 * time.Second

// Validate checks the configuration; errors name the field, e.g.
// "mail.smtp.addr: required".
func (c SMTPConfig) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("mail.smtp.%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if c.Addr == "" {
		bad("addr", "required")
	} else if host, port, err := net.SplitHostPort(c.Addr); err != nil {
		bad("addr", "want host:port: %v", err)
	} else if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
		bad("addr", "want host:port with a port from 1 to 65535, got %q", c.Addr)
	}
	if c.From == "" {
		bad("from", "required")
	} else if hasControl(c.From) {
		bad("from", "line break or control character")
	} else if _, err := mail.ParseAddress(c.From); err != nil {
		bad("from", "%v", err)
	}
	if c.Username != "" && c.Password == "" {
		bad("password", "required when mail.smtp.username is set")
	}
	if c.Password != "" && c.Username == "" {
		bad("username", "required when mail.smtp.password is set")
	}
	if c.Timeout < 0 {
		bad("timeout", "must not be negative")
	}
	if hasControl(c.LocalName) {
		bad("local_name", "line break or control character")
	}
	return errors.Join(errs...)
}

// SMTP sends each message over a new connection to a submission server.
type SMTP struct {
	cfg  SMTPConfig
	host string
	from *mail.Address
}

var _ Mailer = (*SMTP)(nil)

// NewSMTP validates cfg and returns the mailer.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(cfg.Addr)
	from, _ := mail.ParseAddress(cfg.From)
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultSMTPTimeout
	}
	if cfg.LocalName == "" {
		cfg.LocalName = "localhost"
	}
	return &SMTP{cfg: cfg, host: host, from: from}, nil
}

// Send delivers m. It fails without connecting if m is invalid (no
// recipient, CR/LF in To or Subject: ErrHeaderInjection, no body).
func (s *SMTP) Send(ctx context.Context, m Message) (err error) {
	to, err := m.validate()
	if err != nil {
		return err
	}
	msg, err := compose(s.from, to, m, time.Now())
	if err != nil {
		return err
	}

	deadline := time.Now().Add(s.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("mail: smtp dial: %w", err)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return err
	}
	// Cancelling ctx aborts a blocked read or write.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
	}()

	c, err := smtp.NewClient(conn, s.host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("mail: smtp greeting: %w", err)
	}
	defer c.Close()
	if err := c.Hello(s.cfg.LocalName); err != nil {
		return fmt.Errorf("mail: smtp EHLO: %w", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if s.cfg.TLSConfig != nil {
			tc = s.cfg.TLSConfig.Clone()
		}
		if tc.ServerName == "" {
			tc.ServerName = s.host
		}
		if err := c.StartTLS(tc); err != nil {
			return fmt.Errorf("mail: smtp STARTTLS: %w", err)
		}
	} else if s.cfg.RequireTLS {
		return errors.New("mail: smtp server does not offer STARTTLS and mail.smtp.require_tls is set")
	}
	if s.cfg.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("mail: smtp server does not offer AUTH but mail.smtp.username is set")
		}
		if err := c.Auth(smtp.PlainAuth("", s.cfg.Username, s.cfg.Password, s.host)); err != nil {
			return fmt.Errorf("mail: smtp AUTH: %w", err)
		}
	}
	if err := c.Mail(s.from.Address); err != nil {
		return fmt.Errorf("mail: smtp MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to.Address); err != nil {
		return fmt.Errorf("mail: smtp RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("mail: smtp DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("mail: smtp DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("mail: smtp DATA: %w", err)
	}
	// The server accepted the message at the end of DATA; a failed QUIT
	// does not undo that.
	_ = c.Quit()
	return nil
}
