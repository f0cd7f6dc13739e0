package region

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// Accounts is the storage a regional node needs beyond creating and
// finding users: profile, verification, credentials, lockout, erasure.
// *store.DB implements it.
type Accounts interface {
	UserByID(ctx context.Context, id string) (store.User, error)
	UpdateProfile(ctx context.Context, id string, up store.ProfileUpdate) error
	SetEmailVerified(ctx context.Context, id string, verified bool) error
	SetPasswordHash(ctx context.Context, id, hash string) error
	DeleteUser(ctx context.Context, id string) error
	ExportUser(ctx context.Context, id string) (store.Export, error)

	CreateToken(ctx context.Context, t store.Token) error
	ConsumeToken(ctx context.Context, hash [32]byte, purpose string, now time.Time) (string, error)
	DeleteTokens(ctx context.Context, userID, purpose string) error

	RecordLoginFailure(ctx context.Context, userID string, at time.Time) error
	CountLoginFailures(ctx context.Context, userID string, since time.Time) (int, error)
	ClearLoginFailures(ctx context.Context, userID string) error
}

// Audit is the region's append-only audit log. *store.DB implements it.
type Audit interface {
	AppendAudit(ctx context.Context, e store.AuditEvent) (int64, error)
}

// Token purposes and lifetimes.
const (
	purposeVerify = "verify_email"
	purposeReset  = "reset_password"
	verifyTTL     = 24 * time.Hour
	resetTTL      = 30 * time.Minute
)

// Lockout: an account (or an unknown identifier, so that lockout does not
// reveal which exist) with LockoutFailures failed logins within
// LockoutWindow is refused until the oldest of them ages out: at most
// LockoutFailures*(time.Hour/LockoutWindow) = 40 attempts an hour.
const (
	LockoutFailures = 10
	LockoutWindow   = 15 * time.Minute
)

// newToken returns a random single-use token and its hash.
func newToken() (string, [32]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", [32]byte{}, err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	return tok, sha256.Sum256([]byte(tok)), nil
}

// link builds a link into this region for an emailed token: through the
// public URL (a router), with home= so the router sends it here although
// the request carries no identifier.
func (s *Server) link(path, token string) string {
	q := url.Values{"home": {s.cfg.Name}, "token": {token}}
	return strings.TrimRight(s.cfg.PublicURL, "/") + path + "?" + q.Encode()
}

// sendToken creates a token for the user and mails its link. Mail is sent
// in the background so that a request's timing does not tell whether a
// message went out.
func (s *Server) sendToken(ctx context.Context, u store.User, purpose string, ttl time.Duration, path, subject, text string) error {
	tok, hash, err := newToken()
	if err != nil {
		return err
	}
	if err := s.cfg.Accounts.CreateToken(ctx, store.Token{Hash: hash, UserID: u.ID, Purpose: purpose, ExpiresAt: time.Now().Add(ttl)}); err != nil {
		return fmt.Errorf("%s token: %w", purpose, err)
	}
	msg := mail.Message{To: u.Email, Subject: subject, Text: fmt.Sprintf(text, s.link(path, tok))}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.cfg.Mailer.Send(ctx, msg); err != nil {
			s.log.Error("mail not sent", "user", u.ID, "purpose", purpose, "err", err)
		}
	}()
	return nil
}

// audit appends to the audit log; a failure is logged, not returned: the
// action has happened.
func (s *Server) audit(c echo.Context, actor, action, subject string, detail map[string]string) {
	e := store.AuditEvent{Actor: actor, Action: action, Subject: subject, IP: c.RealIP(), Detail: detail}
	if _, err := s.cfg.Audit.AppendAudit(c.Request().Context(), e); err != nil {
		s.log.Error("audit append failed", "action", action, "subject", subject, "err", err)
	}
}

// auditAfter appends to the audit log after the answer has gone: for the
// login path, whose latency (and, for failures, whose timing) should not
// include a database commit. The entry is still written before the server
// shuts down (Server.Wait).
func (s *Server) auditAfter(c echo.Context, actor, action, subject string) {
	s.auditAfterDetail(c, actor, action, subject, nil)
}

// auditAfterDetail is auditAfter with details.
func (s *Server) auditAfterDetail(c echo.Context, actor, action, subject string, detail map[string]string) {
	e := store.AuditEvent{Actor: actor, Action: action, Subject: subject, IP: c.RealIP(), At: time.Now(), Detail: detail}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := s.cfg.Audit.AppendAudit(ctx, e); err != nil {
			s.log.Error("audit append failed", "action", action, "subject", subject, "err", err)
		}
	}()
}

// Wait waits for the audit entries and other writes the server does after
// answering; call it after the HTTP server has stopped, before closing the
// store.
func (s *Server) Wait() {
	s.bg.Wait()
	if s.oidc != nil {
		s.oidc.Close() // back-channel logouts in flight
	}
}

type tokenRequest struct {
	Token    string `json:"token"`
	Password string `json:"password"`
}

// consume redeems a token of the given purpose from the body (or the
// query, for links opened in a browser).
func (s *Server) consume(c echo.Context, in *tokenRequest, purpose string) (string, error) {
	if in.Token == "" {
		in.Token = c.QueryParam("token")
	}
	if in.Token == "" || len(in.Token) > 128 {
		return "", problem.New(http.StatusBadRequest, "token: required")
	}
	id, err := s.cfg.Accounts.ConsumeToken(c.Request().Context(), sha256.Sum256([]byte(in.Token)), purpose, time.Now())
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExpired):
		// One answer for unknown, used and expired tokens.
		return "", problem.New(http.StatusBadRequest, "token: invalid or expired")
	case err != nil:
		return "", fmt.Errorf("consume %s token: %w", purpose, err)
	}
	return id, nil
}

// verifyEmail redeems an email verification token (POST {"token"} or the
// emailed link's query).
func (s *Server) verifyEmail(c echo.Context) error {
	var in tokenRequest
	if c.Request().ContentLength > 0 {
		if err := decodeJSON(c, &in); err != nil {
			return err
		}
	}
	id, err := s.consume(c, &in, purposeVerify)
	if err != nil {
		return err
	}
	if err := s.cfg.Accounts.SetEmailVerified(c.Request().Context(), id, true); err != nil {
		return fmt.Errorf("verify email: %w", err)
	}
	s.audit(c, id, "user.email_verified", id, nil)
	return c.JSON(http.StatusOK, map[string]any{"email_verified": true})
}

// resetRequested is the one answer to a reset request, whether or not the
// address has an account.
func resetRequested(c echo.Context) error {
	return c.JSON(http.StatusAccepted, map[string]string{"status": "if the address has an account, a reset link has been sent"})
}

// requestReset mails a password reset link to an existing account; the
// answer is the same for unknown addresses.
func (s *Server) requestReset(c echo.Context) error {
	var in credentials
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	email, err := homeindex.NormalizeEmail(in.Email)
	if err != nil {
		return problem.New(http.StatusBadRequest, "email: "+err.Error())
	}
	if err := s.routedBy(c, s.cfg.Hasher.EmailKey(email)); err != nil {
		return err
	}
	if err := s.mailResetLink(c, email); err != nil {
		return err
	}
	return resetRequested(c)
}

// confirmReset sets a new password with a reset token.
func (s *Server) confirmReset(c echo.Context) error {
	var in tokenRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if err := checkPasswordPolicy(in.Password); err != nil {
		return problem.New(http.StatusBadRequest, err.Error())
	}
	id, err := s.consume(c, &in, purposeReset)
	if err != nil {
		return err
	}
	if err := s.resetPassword(c, id, in.Password); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"password_changed": true})
}

// recentFailures counts recent failed logins per identifier (index key),
// with or without an account, on this node; bounded.
type recentFailures struct {
	mu sync.Mutex
	m  map[homeindex.Key][]time.Time
}

const maxUnknownTracked = 100_000

// failures returns the failures of k since since, recording one at now if
// add.
func (u *recentFailures) failures(k homeindex.Key, since, now time.Time, add bool) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[homeindex.Key][]time.Time{}
	}
	ts := u.m[k][:0]
	for _, t := range u.m[k] {
		if t.After(since) {
			ts = append(ts, t)
		}
	}
	if add {
		if len(u.m) >= maxUnknownTracked {
			for old := range u.m { // drop an arbitrary entry: bounded memory
				delete(u.m, old)
				break
			}
		}
		ts = append(ts, now)
	}
	if len(ts) == 0 {
		delete(u.m, k)
	} else {
		u.m[k] = ts
	}
	return len(ts)
}

// clear forgets the failures of k.
func (u *recentFailures) clear(k homeindex.Key) {
	u.mu.Lock()
	delete(u.m, k)
	u.mu.Unlock()
}

// errLocked is the answer while an account (or unknown identifier) is
// locked out.
func errLocked() error {
	p := problem.New(http.StatusTooManyRequests, "too many failed attempts; try again later or reset your password")
	p.RetryAfter = int(LockoutWindow.Seconds())
	return p
}

// authenticated returns the session of the request's session cookie (or
// bearer token), verified with this region's key and still in the store.
func (s *Server) authenticated(c echo.Context) (session.Session, error) {
	tok := ""
	if ck, err := c.Cookie(SessionCookie); err == nil {
		tok = ck.Value
	} else if a := c.Request().Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		tok = a[7:]
	}
	unauth := problem.New(http.StatusUnauthorized, "a session is required")
	if tok == "" {
		return session.Session{}, unauth
	}
	claims, err := s.sessions.Verify(tok, time.Now())
	if err != nil {
		return session.Session{}, unauth
	}
	sess, err := s.cfg.Sessions.Get(c.Request().Context(), claims.SessionID)
	if err != nil || sess.UserID != claims.Subject {
		return session.Session{}, unauth
	}
	return sess, nil
}

// currentUser is the user of the request's session.
func (s *Server) currentUser(c echo.Context) (session.Session, store.User, error) {
	sess, err := s.authenticated(c)
	if err != nil {
		return sess, store.User{}, err
	}
	u, err := s.cfg.Accounts.UserByID(c.Request().Context(), sess.UserID)
	if err != nil {
		return sess, u, fmt.Errorf("account: %w", err)
	}
	return sess, u, nil
}

// accountView is what GET /account returns.
type accountView struct {
	ID            string            `json:"id"`
	Home          string            `json:"home"`
	Email         string            `json:"email"`
	EmailVerified bool              `json:"email_verified"`
	Name          string            `json:"name,omitempty"`
	Attributes    map[string]string `json:"attributes,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
}

func (s *Server) getAccount(c echo.Context) error {
	_, u, err := s.currentUser(c)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, accountView{ID: u.ID, Home: s.cfg.Name, Email: u.Email, EmailVerified: u.EmailVerified, Name: u.Name, Attributes: u.Attributes, CreatedAt: u.CreatedAt})
}

type profilePatch struct {
	Name       *string           `json:"name"`
	Attributes map[string]string `json:"attributes"`
}

// patchAccount updates the profile (progressive profiling: attributes are
// added over time).
func (s *Server) patchAccount(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	var in profilePatch
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if p := checkProfile(&in); p != nil {
		return p
	}
	err = s.cfg.Accounts.UpdateProfile(c.Request().Context(), sess.UserID, store.ProfileUpdate{Name: in.Name, Attributes: in.Attributes})
	if err != nil {
		return fmt.Errorf("account: %w", err)
	}
	keys := make([]string, 0, len(in.Attributes))
	for k := range in.Attributes {
		keys = append(keys, k)
	}
	s.audit(c, sess.UserID, "user.profile_updated", sess.UserID, map[string]string{"attributes": strings.Join(keys, ","), "name": fmt.Sprint(in.Name != nil)})
	return s.getAccount(c)
}

// exportAccount returns everything the region holds about the user.
func (s *Server) exportAccount(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	exp, err := s.cfg.Accounts.ExportUser(c.Request().Context(), sess.UserID)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	s.audit(c, sess.UserID, "user.exported", sess.UserID, nil)
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set("Content-Disposition", `attachment; filename="domicile-export.json"`)
	return c.JSON(http.StatusOK, exp)
}

// erase deletes the user's rows and data key, then releases their index
// entries. Rows first: if the release then fails, the identifier stays
// claimed by a user who no longer exists (retry-safe, and never the other
// way round, data without a claim).
func (s *Server) erase(c echo.Context, u store.User) error {
	ctx := c.Request().Context()
	if err := s.cfg.Accounts.DeleteUser(ctx, u.ID); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	key := s.cfg.Hasher.EmailKey(u.Email)
	if err := s.cfg.Index.Release(ctx, []homeindex.Key{key}, u.ID); err != nil {
		s.log.Error("delete: index release failed; the identifier stays claimed", "user", u.ID, "key", key.String(), "err", err)
	}
	s.recent.clear(key)
	return nil
}

// deleteAccount erases the user: the index entries are released (so the
// identifier is free again everywhere), the rows deleted and the user's
// data key destroyed (store.DeleteUser), the session ended.
func (s *Server) deleteAccount(c echo.Context) error {
	sess, u, err := s.currentUser(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := s.erase(c, u); err != nil {
		return err
	}
	_ = s.cfg.Sessions.Delete(ctx, sess.ID)
	s.revokeSession(ctx, sess.ID, sess.ExpiresAt)
	s.audit(c, u.ID, "user.deleted", u.ID, nil)
	clearSessionCookie(c)
	return c.NoContent(http.StatusNoContent)
}

// checkProfile checks a profile update against the store's limits, so that
// bad input is a 400 naming the field.
func checkProfile(in *profilePatch) *problem.Problem {
	if in.Name != nil && (len(*in.Name) > store.MaxNameBytes || !utf8.ValidString(*in.Name)) {
		return problem.New(http.StatusBadRequest, fmt.Sprintf("name: at most %d bytes of UTF-8", store.MaxNameBytes))
	}
	if len(in.Attributes) > store.MaxAttributes {
		return problem.New(http.StatusBadRequest, fmt.Sprintf("attributes: at most %d", store.MaxAttributes))
	}
	for k, v := range in.Attributes {
		ok := k != "" && len(k) <= store.MaxAttributeKey
		for i := 0; i < len(k) && ok; i++ {
			ok = k[i] >= 'a' && k[i] <= 'z' || k[i] >= '0' && k[i] <= '9' || k[i] == '_'
		}
		if !ok {
			return problem.New(http.StatusBadRequest, fmt.Sprintf("attributes: key %q: want 1 to %d characters of [a-z0-9_]", truncate(k, 80), store.MaxAttributeKey))
		}
		if len(v) > store.MaxAttributeValue || !utf8.ValidString(v) {
			return problem.New(http.StatusBadRequest, fmt.Sprintf("attributes.%s: at most %d bytes of UTF-8", k, store.MaxAttributeValue))
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
