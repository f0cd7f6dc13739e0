package region

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/region/store"
	"github.com/domicile/domicile/session"
)

// The steps of signing in, shared by the JSON API and the hosted pages,
// which differ only in how they answer.

// passwordResult is the outcome of checkPassword.
type passwordResult int

const (
	passwordOK     passwordResult = iota
	passwordBad                   // wrong password, unknown address or disabled account: one answer
	passwordLocked                // too many recent failures
)

// checkPassword checks the password of a normalised email the request was
// routed by. Failed logins are counted per identifier here (at once, for
// the next attempt) and per account in the database (for the region's
// other nodes and restarts). An unknown address goes through the same
// steps, reads and answers, so neither the answer, its timing nor the
// lockout tells whether an account exists. On success it clears the
// failures and upgrades the hash if the parameters rose.
func (s *Server) checkPassword(c echo.Context, email, password string) (store.User, passwordResult, error) {
	ctx := c.Request().Context()
	now := time.Now().UTC()
	since := now.Add(-LockoutWindow)
	key := s.cfg.Hasher.EmailKey(email)
	u, err := s.cfg.Users.UserByEmail(ctx, email)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return u, 0, fmt.Errorf("login: read user: %w", err)
	}
	known := err == nil
	subject := "unknown:" + key.String()
	if known {
		subject = u.ID
	}
	n, err := s.cfg.Accounts.CountLoginFailures(ctx, subject, since)
	if err != nil {
		return u, 0, fmt.Errorf("login: %w", err)
	}
	n = max(n, s.recent.failures(key, since, now, false))
	hash := s.dummyHash
	if known {
		hash = u.PasswordHash
	}
	ok, err := verifyPassword(hash, password)
	if err != nil {
		return u, 0, fmt.Errorf("login: user %s: %w", u.ID, err)
	}
	if n >= LockoutFailures {
		s.logins.WithLabelValues("locked").Inc()
		if known {
			s.audit(c, u.ID, "user.login_locked", u.ID, nil)
		}
		return u, passwordLocked, nil
	}
	if !known {
		s.recent.failures(key, since, now, true)
		s.logins.WithLabelValues("failed").Inc()
		return u, passwordBad, nil
	}
	if !ok || u.Disabled {
		s.recent.failures(key, since, now, true)
		// Stored after answering: the writes would otherwise make a
		// failure for an existing account measurably slower than one for
		// an unknown address.
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := s.cfg.Accounts.RecordLoginFailure(bg, u.ID, now); err != nil {
				s.log.Error("login: record failure", "user", u.ID, "err", err)
			}
		}()
		s.auditAfter(c, u.ID, "user.login_failed", u.ID)
		s.logins.WithLabelValues("failed").Inc()
		return u, passwordBad, nil
	}
	if n > 0 {
		s.recent.clear(key)
		_ = s.cfg.Accounts.ClearLoginFailures(ctx, u.ID)
	}
	if needsRehash(u.PasswordHash, s.cfg.Argon2) {
		// The parameters rose since this hash was made: upgrade it now,
		// while the password is at hand.
		if h, err := hashPassword(s.cfg.Argon2, password); err == nil {
			if err := s.cfg.Accounts.SetPasswordHash(ctx, u.ID, h); err != nil {
				s.log.Warn("login: rehash not stored", "user", u.ID, "err", err)
			} else {
				s.audit(c, u.ID, "user.password_rehashed", u.ID, nil)
			}
		}
	}
	return u, passwordOK, nil
}

// newMFAToken is the short-lived single-use token of the second step,
// given for a correct password of a user with a second factor.
func (s *Server) newMFAToken(ctx context.Context, u store.User) (string, error) {
	tok, hash, err := newToken()
	if err != nil {
		return "", err
	}
	if err := s.cfg.Accounts.CreateToken(ctx, store.Token{Hash: hash, UserID: u.ID, Purpose: purposeMFALogin, ExpiresAt: time.Now().Add(mfaLoginTTL)}); err != nil {
		return "", fmt.Errorf("login: mfa token: %w", err)
	}
	return tok, nil
}

// checkSecondFactor checks a recovery code (if given) or a TOTP code for
// the user of a redeemed mfa token; a code is accepted once. A failure is
// audited.
func (s *Server) checkSecondFactor(c echo.Context, id, code, recoveryCode string) bool {
	ctx := c.Request().Context()
	ok := false
	if recoveryCode != "" {
		if s.cfg.MFA.UseRecoveryCode(ctx, id, sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(recoveryCode))))) == nil {
			s.audit(c, id, "user.recovery_code_used", id, nil)
			ok = true
		}
	} else if t, err := s.cfg.MFA.TOTP(ctx, id); err == nil {
		step, valid := checkTOTP(t.Secret, strings.TrimSpace(code), time.Now())
		ok = valid && s.cfg.MFA.UseTOTPStep(ctx, id, step) == nil
	}
	if !ok {
		s.auditAfter(c, id, "user.mfa_failed", id)
	}
	return ok
}

// openSession logs the user in: a session in the store and a signed
// session token, set as the session cookie and returned. method is how
// the user authenticated ("password", "mfa", "passkey", "passkey_uv"); the
// token carries it as RFC 8176 "amr" values, for ID tokens.
func (s *Server) openSession(c echo.Context, u store.User, method string) (string, session.Session, error) {
	sid, err := session.NewID()
	if err != nil {
		return "", session.Session{}, err
	}
	now := time.Now().UTC()
	sess := session.Session{ID: sid, UserID: u.ID, Home: s.cfg.Name, CreatedAt: now, ExpiresAt: now.Add(s.cfg.SessionTTL),
		RememberedDevice: method == methodRememberedDevice}
	if err := s.cfg.Sessions.Put(c.Request().Context(), sess); err != nil {
		return "", sess, fmt.Errorf("login: store session: %w", err)
	}
	token, err := s.issuer.Issue(session.Claims{Subject: u.ID, Home: s.cfg.Name, SessionID: sid, IssuedAt: now, Expiry: sess.ExpiresAt, AMR: amrOf(method)})
	if err != nil {
		return "", sess, fmt.Errorf("login: issue session token: %w", err)
	}
	s.logins.WithLabelValues("ok").Inc()
	s.auditAfter(c, u.ID, "user.login", u.ID)
	c.SetCookie(&http.Cookie{
		Name: SessionCookie, Value: token, Path: "/", Expires: sess.ExpiresAt,
		HttpOnly: true, Secure: secure(c), SameSite: http.SameSiteLaxMode,
	})
	return token, sess, nil
}

// amrOf gives the RFC 8176 authentication method references of a login
// method: a password; a password and a one-time code; a passkey (a
// hardware-bound key), with user verification two factors in one.
func amrOf(method string) []string {
	switch method {
	case "password", methodRememberedDevice:
		// A remembered device is no second factor.
		return []string{"pwd"}
	case "mfa":
		return []string{"pwd", "otp", "mfa"}
	case methodPasskey:
		return []string{"hwk"}
	case methodPasskeyUV:
		return []string{"hwk", "user", "mfa"}
	}
	return nil
}

// resetPassword sets a new password (already checked against the policy)
// for the user of a redeemed reset token: other outstanding reset links die
// with this one, and a lockout ends.
func (s *Server) resetPassword(c echo.Context, id, password string) error {
	hash, err := hashPassword(s.cfg.Argon2, password)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := s.cfg.Accounts.SetPasswordHash(ctx, id, hash); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	_ = s.cfg.Accounts.DeleteTokens(ctx, id, purposeReset)
	_ = s.cfg.Accounts.ClearLoginFailures(ctx, id)
	if u, err := s.cfg.Accounts.UserByID(ctx, id); err == nil {
		s.recent.clear(s.cfg.Hasher.EmailKey(u.Email))
	}
	s.audit(c, id, "user.password_reset", id, nil)
	return nil
}

// Sign-up failures the caller answers in its own way.
var (
	errAccountExists    = errors.New("an account with this email address already exists")
	errIndexUnavailable = errors.New("the home index is unavailable")
)

// createAccount creates the account of a checked, normalised email (key is
// its index key) with a policy-checked password: the identifier is claimed
// in the home index first (it is what makes an email unique across
// regions), the row is written only if the claim succeeds, and the claim
// is given back if the write fails, so a retry can succeed. Then the
// verification link is mailed. Conflicts wrap errAccountExists, an index
// that cannot be reached errIndexUnavailable.
func (s *Server) createAccount(c echo.Context, email, name, password string, key homeindex.Key) (store.User, error) {
	hash, err := hashPassword(s.cfg.Argon2, password)
	if err != nil {
		return store.User{}, fmt.Errorf("hash password: %w", err)
	}
	id, err := newUserID(s.cfg.Name)
	if err != nil {
		return store.User{}, err
	}
	ctx := c.Request().Context()
	keys := []homeindex.Key{key}
	rule := homeRule(c.Request().Header.Get(homeindex.HeaderHomeRule))
	if err := s.cfg.Index.ClaimByRule(ctx, keys, s.cfg.Name, id, rule); err != nil {
		if errors.Is(err, homeindex.ErrConflict) {
			s.signups.WithLabelValues("conflict").Inc()
			return store.User{}, errAccountExists
		}
		s.signups.WithLabelValues("index_unavailable").Inc()
		s.log.Error("sign-up: claim failed", "key", key.String(), "err", err)
		return store.User{}, fmt.Errorf("%w: %v", errIndexUnavailable, err)
	}
	u := store.User{ID: id, Email: email, Name: strings.TrimSpace(name), PasswordHash: hash, CreatedAt: time.Now().UTC()}
	if err := s.cfg.Users.CreateUser(ctx, u); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rerr := s.cfg.Index.Release(rctx, keys, id); rerr != nil {
			s.log.Error("sign-up: release after failed write", "key", key.String(), "err", rerr)
		}
		if errors.Is(err, store.ErrDuplicate) {
			s.signups.WithLabelValues("conflict").Inc()
			return store.User{}, errAccountExists
		}
		s.signups.WithLabelValues("error").Inc()
		return store.User{}, fmt.Errorf("sign-up: create user: %w", err)
	}
	s.signups.WithLabelValues("created").Inc()
	s.log.Info("user created", "user", id)
	s.audit(c, id, "user.created", id, map[string]string{"rule": rule})
	if err := s.sendToken(ctx, u, purposeVerify, verifyTTL, "/ui/verify-email", "Confirm your email address",
		"Welcome. Confirm your email address by opening this link within 24 hours:\n\n%s\n"); err != nil {
		s.log.Error("sign-up: verification mail", "user", id, "err", err)
	}
	return u, nil
}

// beginTOTP starts a TOTP enrolment for u: a new secret, stored sealed and
// unconfirmed. The key is shown to the user once.
func (s *Server) beginTOTP(c echo.Context, u store.User) (*otp.Key, error) {
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "Domicile", AccountName: u.Email, Period: totpPeriod, SecretSize: 20, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return nil, fmt.Errorf("totp: %w", err)
	}
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(key.Secret())
	if err != nil {
		return nil, fmt.Errorf("totp: %w", err)
	}
	if err := s.cfg.MFA.SetTOTP(c.Request().Context(), u.ID, secret); err != nil {
		return nil, fmt.Errorf("totp: %w", err)
	}
	s.audit(c, u.ID, "user.totp_enrolment_started", u.ID, nil)
	return key, nil
}

// mailResetLink mails a password reset link if the normalised email has an
// account; the caller answers the same either way.
func (s *Server) mailResetLink(c echo.Context, email string) error {
	ctx := c.Request().Context()
	u, err := s.cfg.Users.UserByEmail(ctx, email)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("reset: read user: %w", err)
	}
	if err := s.sendToken(ctx, u, purposeReset, resetTTL, "/ui/password/reset/confirm",
		"Reset your password", "Someone asked to reset the password of your account. If it was you, open this link within 30 minutes:\n\n%s\n\nIf it was not you, ignore this message."); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	s.audit(c, u.ID, "user.password_reset_requested", u.ID, nil)
	return nil
}
