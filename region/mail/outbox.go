package mail

import (
	"context"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// DefaultOutboxLimit is the number of messages an Outbox keeps by default.
const DefaultOutboxLimit = 200

// Outbox is a development Mailer that keeps the last messages in memory
// instead of sending them, and shows them over HTTP (it is an http.Handler:
// an HTML page, or JSON with ?format=json). It is safe for concurrent use;
// the zero value keeps DefaultOutboxLimit messages and logs nothing.
//
// It refuses what the SMTP mailer refuses (ErrHeaderInjection, no
// recipient, no body), so development shows the same errors.
type Outbox struct {
	mu    sync.Mutex
	limit int
	log   *slog.Logger
	ring  []stored // oldest at ring[next] once full
	next  int
}

type stored struct {
	Message
	SentAt time.Time `json:"sent_at"`
}

var _ Mailer = (*Outbox)(nil)

// NewOutbox returns an Outbox that keeps the last limit messages (limit <= 0
// means DefaultOutboxLimit) and, if logger is not nil, logs each message at
// info level with its subject and a redacted recipient (RedactAddress).
func NewOutbox(limit int, logger *slog.Logger) *Outbox {
	return &Outbox{limit: limit, log: logger}
}

// Send keeps m, dropping the oldest message when the outbox is full.
func (o *Outbox) Send(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := m.validate(); err != nil {
		return err
	}
	o.mu.Lock()
	limit := o.limit
	if limit <= 0 {
		limit = DefaultOutboxLimit
	}
	s := stored{Message: m, SentAt: time.Now()}
	if len(o.ring) < limit {
		o.ring = append(o.ring, s)
	} else {
		o.ring[o.next] = s
		o.next = (o.next + 1) % limit
	}
	o.mu.Unlock()
	if o.log != nil {
		o.log.LogAttrs(ctx, slog.LevelInfo, "mail: message kept in outbox",
			slog.String("to", RedactAddress(m.To)), slog.String("subject", m.Subject))
	}
	return nil
}

// stored returns the kept messages, newest first.
func (o *Outbox) stored() []stored {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]stored, 0, len(o.ring))
	for i := range len(o.ring) {
		// o.next-1 is the newest once the ring is full, len-1 before.
		j := (o.next - 1 - i + 2*len(o.ring)) % len(o.ring)
		out = append(out, o.ring[j])
	}
	return out
}

// Messages returns the kept messages, newest first.
func (o *Outbox) Messages() []Message {
	s := o.stored()
	out := make([]Message, len(s))
	for i := range s {
		out[i] = s[i].Message
	}
	return out
}

// Last returns the newest message to the address to. Addresses are
// compared without display names and case-insensitively, so "Alice
// <alice@acme.de>" matches "ALICE@acme.de".
func (o *Outbox) Last(to string) (Message, bool) {
	want := normAddr(to)
	for _, s := range o.stored() {
		if normAddr(s.To) == want {
			return s.Message, true
		}
	}
	return Message{}, false
}

func normAddr(s string) string {
	if a, err := mail.ParseAddress(s); err == nil {
		s = a.Address
	}
	return strings.ToLower(strings.TrimSpace(s))
}

// ServeHTTP lists the kept messages, newest first: an HTML page, or a JSON
// array with ?format=json. Only GET and HEAD.
func (o *Outbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	msgs := o.stored()
	if r.URL.Query().Get("format") == "json" {
		h.Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(msgs)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	view := struct {
		Limit    int
		Messages []pageMessage
	}{Limit: o.limitOrDefault()}
	for _, m := range msgs {
		view.Messages = append(view.Messages, pageMessage{stored: m, Segments: linkify(m.Text)})
	}
	_ = outboxPage.Execute(w, view)
}

func (o *Outbox) limitOrDefault() int {
	if o.limit <= 0 {
		return DefaultOutboxLimit
	}
	return o.limit
}

type pageMessage struct {
	stored
	Segments []segment
}

// segment is a run of text or, if URL is set, a link.
type segment struct {
	Text string
	URL  string
}

var linkRE = regexp.MustCompile(`(?i)https?://[^\s<>"'` + "`" + `]+`)

// linkify splits text into plain runs and http(s) links. Trailing
// punctuation (".", ",", ")" without a "(" ...) stays text; anything that
// does not parse as an absolute http(s) URL with a host stays text.
func linkify(text string) []segment {
	var out []segment
	last := 0
	for _, loc := range linkRE.FindAllStringIndex(text, -1) {
		start, end := loc[0], loc[1]
		for end > start {
			c := text[end-1]
			if strings.IndexByte(".,;:!?]}'\"", c) >= 0 ||
				(c == ')' && !strings.Contains(text[start:end], "(")) {
				end--
				continue
			}
			break
		}
		raw := text[start:end]
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			continue
		}
		if start > last {
			out = append(out, segment{Text: text[last:start]})
		}
		out = append(out, segment{Text: raw, URL: raw})
		last = end
	}
	if last < len(text) {
		out = append(out, segment{Text: text[last:]})
	}
	return out
}

// outboxPage is escaped by html/template: message fields are text, link
// hrefs pass its URL filter (only http and https survive).
var outboxPage = template.Must(template.New("outbox").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Outbox ({{len .Messages}})</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
article { border: 1px solid #ccc; border-radius: 4px; margin: 1em 0; padding: .5em 1em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: .5em 0; }
dt { font-weight: bold; }
dd { margin: 0; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: .5em; }
</style>
</head>
<body>
<h1>Outbox</h1>
<p>{{len .Messages}} message(s), newest first; the last {{.Limit}} are kept. <a href="?format=json">JSON</a></p>
{{range .Messages}}
<article>
<dl>
<dt>Sent</dt><dd><time datetime="{{.SentAt.UTC.Format "2006-01-02T15:04:05.000Z07:00"}}">{{.SentAt.UTC.Format "2006-01-02 15:04:05.000 MST"}}</time></dd>
<dt>To</dt><dd>{{.To}}</dd>
<dt>Subject</dt><dd>{{.Subject}}</dd>
</dl>
<pre>{{range .Segments}}{{if .URL}}<a href="{{.URL}}" rel="noopener noreferrer nofollow">{{.Text}}</a>{{else}}{{.Text}}{{end}}{{end}}</pre>
{{if .HTML}}<details><summary>HTML body (source)</summary><pre>{{.HTML}}</pre></details>{{end}}
</article>
{{else}}
<p>No messages yet.</p>
{{end}}
</body>
</html>
`))
