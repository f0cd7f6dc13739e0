package mail

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func msg(i int) Message {
	return Message{To: fmt.Sprintf("user%d@acme.test", i), Subject: fmt.Sprintf("subject %d", i), Text: "body"}
}

func TestOutboxBoundAndOrder(t *testing.T) {
	o := NewOutbox(3, nil)
	ctx := context.Background()
	if len(o.Messages()) != 0 {
		t.Fatal("new outbox not empty")
	}
	for i := range 2 {
		if err := o.Send(ctx, msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := subjects(o.Messages()); got != "subject 1,subject 0" {
		t.Fatalf("before full: %s", got)
	}
	for i := 2; i < 8; i++ {
		o.Send(ctx, msg(i))
		if n := len(o.Messages()); n > 3 {
			t.Fatalf("outbox holds %d messages, limit 3", n)
		}
	}
	if got := subjects(o.Messages()); got != "subject 7,subject 6,subject 5" {
		t.Fatalf("after wrap: %s", got)
	}
	if _, ok := o.Last("user4@acme.test"); ok {
		t.Fatal("Last found a dropped message")
	}
}

func TestOutboxZeroValueDefaultLimit(t *testing.T) {
	var o Outbox
	for i := range DefaultOutboxLimit + 10 {
		if err := o.Send(context.Background(), msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	got := o.Messages()
	if len(got) != DefaultOutboxLimit {
		t.Fatalf("kept %d, want %d", len(got), DefaultOutboxLimit)
	}
	if got[0].Subject != fmt.Sprintf("subject %d", DefaultOutboxLimit+9) || got[len(got)-1].Subject != "subject 10" {
		t.Fatalf("newest %q oldest %q", got[0].Subject, got[len(got)-1].Subject)
	}
}

func TestOutboxLast(t *testing.T) {
	o := NewOutbox(0, nil)
	ctx := context.Background()
	o.Send(ctx, Message{To: "Alice <alice@acme.test>", Subject: "first", Text: "1"})
	o.Send(ctx, Message{To: "bob@acme.test", Subject: "other", Text: "2"})
	o.Send(ctx, Message{To: "alice@ACME.test", Subject: "second", Text: "3"})
	o.Send(ctx, Message{To: "carol@acme.test", Subject: "third", Text: "4"})
	for _, q := range []string{"alice@acme.test", "ALICE@acme.test", "Alice A. <alice@acme.test>"} {
		m, ok := o.Last(q)
		if !ok || m.Subject != "second" {
			t.Fatalf("Last(%q) = %+v, %v", q, m, ok)
		}
	}
	if _, ok := o.Last("dave@acme.test"); ok {
		t.Fatal("Last found a message for dave")
	}
}

func TestOutboxRefusesLikeSMTP(t *testing.T) {
	o := NewOutbox(0, nil)
	if err := o.Send(context.Background(), Message{To: "a@acme.test", Subject: "x\r\nBcc: e@evil.test", Text: "t"}); !errors.Is(err, ErrHeaderInjection) {
		t.Fatalf("injection = %v", err)
	}
	if err := o.Send(context.Background(), Message{To: "a@acme.test\nBcc: e@evil.test", Subject: "x", Text: "t"}); !errors.Is(err, ErrHeaderInjection) {
		t.Fatalf("injection = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := o.Send(ctx, msg(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled = %v", err)
	}
	if n := len(o.Messages()); n != 0 {
		t.Fatalf("kept %d refused messages", n)
	}
}

func TestOutboxConcurrent(t *testing.T) {
	o := NewOutbox(50, nil)
	srv := httptest.NewServer(o)
	defer srv.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				if err := o.Send(context.Background(), msg(w*1000+i)); err != nil {
					t.Error(err)
				}
				if i%10 == 0 {
					o.Messages()
					o.Last("user5@acme.test")
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			resp, err := srv.Client().Get(srv.URL + "?format=json")
			if err != nil {
				t.Error(err)
				return
			}
			var got []map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Error(err)
			}
			resp.Body.Close()
		}
	})
	wg.Wait()
	if n := len(o.Messages()); n != 50 {
		t.Fatalf("kept %d, want 50", n)
	}
}

func TestOutboxHTMLEscapes(t *testing.T) {
	o := NewOutbox(0, nil)
	evil := Message{
		To:      `"<script>alert(1)</script>" <x@acme.test>`,
		Subject: `<script>alert("subject")</script>`,
		Text: "Click https://acme.test/verify?t=a&b=<c> now.\n" +
			"javascript:alert(1) and <script>alert('body')</script>\n" +
			`https://acme.test/"onmouseover="alert(1) and (see https://acme.test/x).` + "\n" +
			"data:text/html,<script>alert(2)</script> HTTPS://ACME.test/up",
		HTML: `<img src=x onerror=alert(1)><script>alert("html")</script>`,
	}
	if err := o.Send(context.Background(), evil); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	o.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/dev/outbox", nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	page := rec.Body.String()
	for _, bad := range []string{"<script", "<img", `href="javascript`, `href="data`, `"onmouseover`} {
		if strings.Contains(strings.ToLower(page), strings.ToLower(bad)) {
			t.Errorf("page contains %q:\n%s", bad, page)
		}
	}
	for _, want := range []string{
		"&lt;script&gt;alert(&#34;subject&#34;)&lt;/script&gt;",
		`<a href="https://acme.test/verify?t=a&amp;b=" rel="noopener noreferrer nofollow">https://acme.test/verify?t=a&amp;b=</a>&lt;c&gt; now.`,
		`<a href="https://acme.test/" rel="noopener noreferrer nofollow">https://acme.test/</a>&#34;onmouseover=`,
		`(see <a href="https://acme.test/x" rel="noopener noreferrer nofollow">https://acme.test/x</a>).`,
		`<a href="HTTPS://ACME.test/up"`,
		"&lt;img src=x onerror=alert(1)&gt;",
		"javascript:alert(1) and &lt;script&gt;",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
}

func TestOutboxJSONAndMethods(t *testing.T) {
	o := NewOutbox(0, nil)
	o.Send(context.Background(), Message{To: "a@acme.test", Subject: "one", Text: "t1"})
	o.Send(context.Background(), Message{To: "b@acme.test", Subject: "two", Text: "t2", HTML: "<p>t2</p>"})
	rec := httptest.NewRecorder()
	o.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?format=json", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var got []struct {
		To, Subject, Text, HTML string
		SentAt                  string `json:"sent_at"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Subject != "two" || got[0].HTML != "<p>t2</p>" || got[1].To != "a@acme.test" || got[1].SentAt == "" {
		t.Fatalf("json %s", rec.Body)
	}
	if strings.Contains(rec.Body.String(), `"html":""`) {
		t.Fatalf("empty html not omitted: %s", rec.Body)
	}

	empty := httptest.NewRecorder()
	NewOutbox(0, nil).ServeHTTP(empty, httptest.NewRequest(http.MethodGet, "/?format=json", nil))
	if strings.TrimSpace(empty.Body.String()) != "[]" {
		t.Fatalf("empty json %q", empty.Body)
	}

	rec = httptest.NewRecorder()
	o.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST = %d", rec.Code)
	}
}

func TestOutboxLogsRedacted(t *testing.T) {
	var buf bytes.Buffer
	o := NewOutbox(0, slog.New(slog.NewJSONHandler(&buf, nil)))
	o.Send(context.Background(), Message{To: "Alice Example <alice.secret@acme.de>", Subject: "Verify your address", Text: "https://acme.test/verify?t=TOKEN123"})
	line := buf.String()
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	if rec["level"] != "INFO" || rec["to"] != "a***@acme.de" || rec["subject"] != "Verify your address" {
		t.Fatalf("log %s", line)
	}
	for _, leak := range []string{"alice.secret", "Alice Example", "TOKEN123"} {
		if strings.Contains(line, leak) {
			t.Fatalf("log leaks %q: %s", leak, line)
		}
	}
}

func TestLinkify(t *testing.T) {
	segs := linkify("a http://x.test/p, b https://y.test/q?r=1#f) c http:// d")
	var b strings.Builder
	for _, s := range segs {
		if s.URL != "" {
			fmt.Fprintf(&b, "[%s]", s.URL)
		} else {
			b.WriteString(s.Text)
		}
	}
	if got, want := b.String(), "a [http://x.test/p], b [https://y.test/q?r=1#f]) c http:// d"; got != want {
		t.Fatalf("linkify = %q, want %q", got, want)
	}
}

func subjects(ms []Message) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Subject)
	}
	return strings.Join(s, ",")
}
