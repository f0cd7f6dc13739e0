package region

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/store"
)

// MFA is the storage of second factors. *store.DB implements it.
type MFA interface {
	SetTOTP(ctx context.Context, userID string, secret []byte) error
	TOTP(ctx context.Context, userID string) (store.TOTP, error)
	UseTOTPStep(ctx context.Context, userID string, step int64) error
	DeleteTOTP(ctx context.Context, userID string) error
	SetRecoveryCodes(ctx context.Context, userID string, hashes [][32]byte) error
	UseRecoveryCode(ctx context.Context, userID string, hash [32]byte) error
	RecoveryCodesLeft(ctx context.Context, userID string) (int, error)
}

// TOTP parameters: RFC 6238 defaults, which every authenticator app
// supports; one step of clock skew either way.
const (
	totpPeriod      = 30
	totpSkew        = 1
	recoveryCodes   = 10
	purposeMFALogin = "mfa_login"
	mfaLoginTTL     = 5 * time.Minute
)

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// checkTOTP returns the time step a code is valid for at now (within the
// skew), or false. All candidate steps are compared in constant time.
func checkTOTP(secret []byte, code string, now time.Time) (int64, bool) {
	b32 := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(secret)
	step := now.Unix() / totpPeriod
	var found int64
	ok := 0
	for d := int64(-totpSkew); d <= totpSkew; d++ {
		want, err := totp.GenerateCodeCustom(b32, time.Unix((step+d)*totpPeriod, 0), totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			found, ok = step+d, 1
		}
	}
	return found, ok == 1
}

// enrolTOTP starts a TOTP enrolment: a new secret, shown once as a key and
// an otpauth:// URL for a QR code. It is not in force until confirmed.
func (s *Server) enrolTOTP(c echo.Context) error {
	_, u, err := s.currentUser(c)
	if err != nil {
		return err
	}
	key, err := s.beginTOTP(c, u)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]string{"secret": key.Secret(), "otpauth_url": key.URL()})
}

type codeRequest struct {
	Code         string `json:"code"`
	RecoveryCode string `json:"recovery_code"`
	MFAToken     string `json:"mfa_token"`
}

// newRecoveryCodes makes codes of 50 random bits, as xxxxx-xxxxx.
func newRecoveryCodes() ([]string, [][32]byte, error) {
	codes := make([]string, recoveryCodes)
	hashes := make([][32]byte, recoveryCodes)
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	for i := range codes {
		b := make([]byte, 7)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, err
		}
		s := strings.ToLower(enc.EncodeToString(b))[:10]
		codes[i] = s[:5] + "-" + s[5:]
		hashes[i] = sha256.Sum256([]byte(codes[i]))
	}
	return codes, hashes, nil
}

// confirmTOTP puts an enrolment in force once the user shows a valid code,
// and returns fresh recovery codes (shown this once).
func (s *Server) confirmTOTP(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	var in codeRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	ctx := c.Request().Context()
	t, err := s.cfg.MFA.TOTP(ctx, sess.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return problem.New(http.StatusConflict, "no TOTP enrolment has been started")
	}
	if err != nil {
		return fmt.Errorf("totp: %w", err)
	}
	step, ok := checkTOTP(t.Secret, strings.TrimSpace(in.Code), time.Now())
	if !ok {
		return problem.New(http.StatusBadRequest, "code: not valid")
	}
	if err := s.cfg.MFA.UseTOTPStep(ctx, sess.UserID, step); err != nil {
		if errors.Is(err, store.ErrReplay) {
			return problem.New(http.StatusBadRequest, "code: already used; wait for the next one")
		}
		return fmt.Errorf("totp: %w", err)
	}
	codes, hashes, err := newRecoveryCodes()
	if err != nil {
		return err
	}
	if err := s.cfg.MFA.SetRecoveryCodes(ctx, sess.UserID, hashes); err != nil {
		return fmt.Errorf("totp: %w", err)
	}
	s.audit(c, sess.UserID, "user.totp_enabled", sess.UserID, nil)
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{"totp_enabled": true, "recovery_codes": codes})
}

// removeTOTP turns TOTP off (and drops the recovery codes).
func (s *Server) removeTOTP(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	if err := s.cfg.MFA.DeleteTOTP(c.Request().Context(), sess.UserID); err != nil {
		return fmt.Errorf("totp: %w", err)
	}
	s.audit(c, sess.UserID, "user.totp_disabled", sess.UserID, nil)
	s.forgetDevices(c, sess.UserID, sess.UserID)
	return c.NoContent(http.StatusNoContent)
}

// mfaRequired reports whether the user must give a second factor.
func (s *Server) mfaRequired(ctx context.Context, userID string) (bool, error) {
	t, err := s.cfg.MFA.TOTP(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil && t.Confirmed, err
}

// startMFALogin answers a correct password of a user with a second factor:
// no session yet, but a short-lived single-use token for the second step
// at /login/mfa (home= routes it here).
func (s *Server) startMFALogin(c echo.Context, u store.User) error {
	tok, err := s.newMFAToken(c.Request().Context(), u)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{
		"mfa_required": true,
		"mfa_token":    tok,
		"next":         "/login/mfa?home=" + s.cfg.Name,
		"expires_in":   int(mfaLoginTTL.Seconds()),
	})
}

// loginMFA is the second step: the token from the password step and a
// TOTP code or a recovery code. The token is single use, so a wrong code
// means starting over from the password.
func (s *Server) loginMFA(c echo.Context) error {
	var in codeRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	ctx := c.Request().Context()
	id, err := s.consume(c, &tokenRequest{Token: in.MFAToken}, purposeMFALogin)
	if err != nil {
		return err
	}
	if !s.checkSecondFactor(c, id, in.Code, in.RecoveryCode) {
		return problem.New(http.StatusUnauthorized, "the second factor is not valid; log in again")
	}
	u, err := s.cfg.Accounts.UserByID(ctx, id)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	return s.startSession(c, u, "mfa")
}

// startSession logs the user in (openSession) and answers with the session
// token.
func (s *Server) startSession(c echo.Context, u store.User, method string) error {
	token, sess, err := s.openSession(c, u, method)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{
		"session_token":     token,
		"session_id":        sess.ID,
		"user_id":           u.ID,
		"home":              s.cfg.Name,
		"mfa":               method == "mfa" || method == methodPasskeyUV,
		"method":            method,
		"remembered_device": method == methodRememberedDevice,
		"expires_at":        sess.ExpiresAt.Format(time.RFC3339),
	})
}
