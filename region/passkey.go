package region

// Passkeys (WebAuthn credentials, github.com/go-webauthn/webauthn): a
// signed-in user registers them; anyone signs in with one, without typing
// an identifier (a discoverable credential) or after typing it.
//
// A region can run several nodes, and a passwordless login begins wherever
// the router sends a request without identifier (the "nearest" region)
// while it ends in the user's home region. So the state of a ceremony
// (webauthn.SessionData) is not kept in memory: it is sealed into a token
// that the client carries from begin to finish (AES-256-GCM under a key
// derived from the route key, which every region and router shares; bound
// to the ceremony's purpose and, for a registration, to the user; valid
// for ceremonyTTL), and the challenge of each ceremony answered is
// recorded in the home region's store until it expires, so an answer
// cannot be replayed.
//
// The user handle (what the authenticator gives back at login) is the
// home region's name, ".", and the 16 random bytes of the user's id: no
// personal data, and enough for the page's script to send the end of the
// login to the home region with the router's home= hint. The region that
// receives it checks everything itself: the handle names this region, the
// credential is that user's, and the signature, challenge, origin, RP ID,
// flags and signature counter are right.

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/mail"
	"github.com/domicile/domicile/region/store"
)

// Passkeys is the storage of WebAuthn credentials and of the challenges of
// the ceremonies already answered. *store.DB implements it.
type Passkeys interface {
	AddPasskey(ctx context.Context, p store.Passkey) error
	Passkeys(ctx context.Context, userID string) ([]store.Passkey, error)
	UsePasskey(ctx context.Context, userID string, id []byte, use store.PasskeyUse) error
	RenamePasskey(ctx context.Context, userID string, id []byte, name string) error
	DeletePasskey(ctx context.Context, userID string, id []byte) error
	DeletePasskeys(ctx context.Context, userID string) (int, error)
	UseChallenge(ctx context.Context, hash [32]byte, expires time.Time) error
}

// Passkey parameters.
const (
	// ceremonyTTL is how long a begun ceremony can be finished: the
	// browser's timeout, the sealed state's and the challenge record's.
	ceremonyTTL = 5 * time.Minute
	// MaxPasskeyName bounds the name a user gives a passkey (characters).
	MaxPasskeyName = 64

	ceremonyRegister = "register"
	ceremonyLogin    = "login"

	// methodPasskeyUV is a passkey login in which the authenticator
	// verified the user (PIN, biometrics): two factors in one.
	methodPasskeyUV = "passkey_uv"
	methodPasskey   = "passkey"
)

// --- relying party -----------------------------------------------------------

// newRelyingParty configures WebAuthn for the deployment. The RP ID and
// origins default to the public URL's: the passkeys are bound to the
// domain users reach the service on, whichever router or region serves a
// request. Browsers accept no IP address as an RP ID, so a loopback public
// URL (the dev topology) is served as "localhost", which browsers treat as
// a secure context.
func newRelyingParty(cfg Config) (*webauthn.WebAuthn, error) {
	pub, err := url.Parse(cfg.PublicURL)
	if err != nil || pub.Host == "" || (pub.Scheme != "http" && pub.Scheme != "https") {
		return nil, fmt.Errorf("region: public_url: %q: want an absolute http(s) URL", cfg.PublicURL)
	}
	rpID := strings.ToLower(cfg.RPID)
	origins := cfg.RPOrigins
	host := strings.ToLower(pub.Hostname())
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		host = "localhost"
	}
	if rpID == "" {
		if net.ParseIP(host) != nil {
			return nil, fmt.Errorf("region: rp_id: required, because the host of public_url (%s) is an IP address, which WebAuthn does not accept as a relying party id", pub.Hostname())
		}
		rpID = host
	}
	if err := protocol.ValidateRPID(rpID); err != nil {
		return nil, fmt.Errorf("region: rp_id: %q: %v", rpID, err)
	}
	if len(origins) == 0 {
		o := pub.Scheme + "://" + host
		if p := pub.Port(); p != "" {
			o += ":" + p
		}
		origins = []string{o}
	}
	clean := make([]string, 0, len(origins))
	for _, o := range origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("region: rp_origins: %q: want an origin such as https://id.example.com", o)
		}
		h := strings.ToLower(u.Hostname())
		if h != rpID && !strings.HasSuffix(h, "."+rpID) {
			return nil, fmt.Errorf("region: rp_origins: %q: its host is not rp_id %q or a subdomain of it", o, rpID)
		}
		clean = append(clean, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	w, err := webauthn.New(&webauthn.Config{
		RPID:                  rpID,
		RPDisplayName:         "Domicile",
		RPOrigins:             clean,
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification:   protocol.VerificationPreferred,
		},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: ceremonyTTL, TimeoutUVD: ceremonyTTL},
			Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: ceremonyTTL, TimeoutUVD: ceremonyTTL},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("region: rp_id, rp_origins: %w", err)
	}
	return w, nil
}

// --- user handle -----------------------------------------------------------

// userHandle is the WebAuthn user handle of a user: region, ".", and the 16
// bytes of the user id's random part (see newUserID).
func userHandle(userID string) ([]byte, error) {
	region, hexPart, ok := strings.Cut(userID, ".")
	raw, err := hex.DecodeString(hexPart)
	if !ok || err != nil || len(raw) != 16 || !validRegionName(region) {
		return nil, fmt.Errorf("passkeys: user id %q is not region-prefixed", userID)
	}
	return append(append([]byte(region), '.'), raw...), nil
}

// parseUserHandle is the inverse of userHandle.
func parseUserHandle(h []byte) (region, userID string, ok bool) {
	i := bytes.IndexByte(h, '.')
	if i < 1 || len(h)-i-1 != 16 || !validRegionName(string(h[:i])) {
		return "", "", false
	}
	region = string(h[:i])
	return region, region + "." + hex.EncodeToString(h[i+1:]), true
}

// validRegionName: 1 to 32 of [a-z0-9-], as residency policies name them.
func validRegionName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// passkeyUser is a user as go-webauthn sees one.
type passkeyUser struct {
	handle []byte
	u      store.User
	creds  []webauthn.Credential
}

func (p *passkeyUser) WebAuthnID() []byte   { return p.handle }
func (p *passkeyUser) WebAuthnName() string { return p.u.Email }
func (p *passkeyUser) WebAuthnDisplayName() string {
	if p.u.Name != "" {
		return p.u.Name
	}
	return p.u.Email
}
func (p *passkeyUser) WebAuthnCredentials() []webauthn.Credential { return p.creds }

// newPasskeyUser is u with their stored passkeys.
func newPasskeyUser(u store.User, ps []store.Passkey) (*passkeyUser, error) {
	h, err := userHandle(u.ID)
	if err != nil {
		return nil, err
	}
	pu := &passkeyUser{handle: h, u: u}
	for _, p := range ps {
		flags := protocol.FlagUserPresent
		if p.UserVerified {
			flags |= protocol.FlagUserVerified
		}
		if p.BackupEligible {
			flags |= protocol.FlagBackupEligible
		}
		if p.BackupState {
			flags |= protocol.FlagBackupState
		}
		var transports []protocol.AuthenticatorTransport
		for _, t := range p.Transports {
			transports = append(transports, protocol.AuthenticatorTransport(t))
		}
		pu.creds = append(pu.creds, webauthn.Credential{
			ID: p.ID, PublicKey: p.PublicKey, AttestationType: p.AttestationType, AttestationFormat: p.AttestationFormat,
			Transport: transports, Flags: webauthn.NewCredentialFlags(flags),
			Authenticator: webauthn.Authenticator{AAGUID: p.AAGUID, SignCount: p.SignCount},
		})
	}
	return pu, nil
}

// --- ceremony state --------------------------------------------------------

// ceremony is the state of a begun ceremony, sealed into the token the
// client carries to the finish.
type ceremony struct {
	Purpose string `json:"p"`
	// UserID is the registering user (registration only).
	UserID string `json:"u,omitempty"`
	// Ident is the index key of the identifier a login was begun with, if
	// any: the passkey must then be that account's.
	Ident   []byte               `json:"i,omitempty"`
	Expires int64                `json:"e"` // Unix milliseconds
	Session webauthn.SessionData `json:"s"`
}

// ceremonies seals and opens ceremony states.
type ceremonies struct{ aead cipher.AEAD }

const (
	ceremonyVersion  = 1
	maxCeremonyToken = 8 << 10
)

// newCeremonies derives the sealing key from the route key (one-way and
// domain-separated, so the tokens reveal nothing about the route key).
func newCeremonies(routeKey []byte) (*ceremonies, error) {
	key, err := hkdf.Key(sha256.New, routeKey, nil, "domicile/region/passkey-ceremony/v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &ceremonies{aead: aead}, nil
}

func ceremonyAAD(purpose, userID string) []byte {
	return []byte("domicile passkey ceremony\x00" + purpose + "\x00" + userID)
}

func (cs *ceremonies) seal(c ceremony) (string, error) {
	pt, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("passkeys: seal ceremony: %w", err)
	}
	out := make([]byte, 1+cs.aead.NonceSize(), 1+cs.aead.NonceSize()+len(pt)+cs.aead.Overhead())
	out[0] = ceremonyVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return "", err
	}
	out = cs.aead.Seal(out, out[1:1+cs.aead.NonceSize()], pt, ceremonyAAD(c.Purpose, c.UserID))
	return base64.RawURLEncoding.EncodeToString(out), nil
}

var errCeremony = errors.New("ceremony state invalid or expired")

// open returns the ceremony sealed in tok if it is one of purpose (and, for
// a registration, of userID) that has not expired at now.
func (cs *ceremonies) open(tok, purpose, userID string, now time.Time) (ceremony, error) {
	var c ceremony
	if tok == "" || len(tok) > maxCeremonyToken {
		return c, errCeremony
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	n := cs.aead.NonceSize()
	if err != nil || len(raw) < 1+n+cs.aead.Overhead() || raw[0] != ceremonyVersion {
		return c, errCeremony
	}
	pt, err := cs.aead.Open(nil, raw[1:1+n], raw[1+n:], ceremonyAAD(purpose, userID))
	if err != nil {
		return c, errCeremony
	}
	if err := json.Unmarshal(pt, &c); err != nil || c.Purpose != purpose || c.UserID != userID {
		return c, errCeremony
	}
	if now.UnixMilli() >= c.Expires {
		return c, errCeremony
	}
	return c, nil
}

// --- the ceremonies, shared by the JSON API and the pages ------------------

func errPasskeyState() error {
	return problem.New(http.StatusBadRequest, "state: invalid, expired or already used; start again")
}

// errPasskeyLogin is the one answer to a passkey that does not sign in: an
// unknown credential or user, a disabled account, a bad signature, a wrong
// origin, a counter that went back.
func errPasskeyLogin() error {
	return problem.New(http.StatusUnauthorized, "the passkey could not be used to sign in")
}

// beginAnswer is what a begin returns: the options for
// navigator.credentials.create/get (base64url where WebAuthn wants bytes)
// and the sealed state to send back with the result.
func beginAnswer(c echo.Context, options any, state string) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{"publicKey": options, "state": state, "expires_in": int(ceremonyTTL.Seconds())})
}

// beginRegistration starts adding a passkey for u.
func (s *Server) beginRegistration(c echo.Context, u store.User) (*protocol.PublicKeyCredentialCreationOptions, string, error) {
	ctx := c.Request().Context()
	ps, err := s.cfg.Passkeys.Passkeys(ctx, u.ID)
	if err != nil {
		return nil, "", fmt.Errorf("passkeys: %w", err)
	}
	if len(ps) >= store.MaxPasskeys {
		return nil, "", problem.New(http.StatusConflict, fmt.Sprintf("you have %d passkeys, the most an account can have; remove one first", store.MaxPasskeys))
	}
	pu, err := newPasskeyUser(u, ps)
	if err != nil {
		return nil, "", err
	}
	// Excluding the user's credentials makes an authenticator that holds
	// one refuse to make a second for the same account.
	cc, sd, err := s.webauthn.BeginRegistration(pu, webauthn.WithExclusions(webauthn.Credentials(pu.creds).CredentialDescriptors()))
	if err != nil {
		return nil, "", fmt.Errorf("passkeys: begin registration: %w", err)
	}
	tok, err := s.ceremonies.seal(ceremony{Purpose: ceremonyRegister, UserID: u.ID, Expires: sd.Expires.UnixMilli(), Session: *sd})
	if err != nil {
		return nil, "", err
	}
	s.passkeyOps.WithLabelValues(ceremonyRegister, "begun").Inc()
	return &cc.Response, tok, nil
}

// cleanPasskeyName checks and trims the name a user gives a passkey; an
// empty one becomes "Passkey" and the date.
func cleanPasskeyName(name string, now time.Time) (string, error) {
	name = strings.TrimSpace(name)
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxPasskeyName {
		return "", problem.New(http.StatusBadRequest, fmt.Sprintf("name: at most %d characters", MaxPasskeyName))
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return "", problem.New(http.StatusBadRequest, "name: no control characters")
		}
	}
	if name == "" {
		name = "Passkey added on " + now.UTC().Format("2 January 2006")
	}
	return name, nil
}

// shortError is a library error message fit for a problem's detail.
func shortError(err error) string {
	var pe *protocol.Error
	msg := err.Error()
	if errors.As(err, &pe) && pe.Details != "" {
		msg = pe.Details
	}
	return truncate(msg, 200)
}

// finishRegistration checks the authenticator's answer to a registration
// begun for u and stores the new passkey.
func (s *Server) finishRegistration(c echo.Context, u store.User, state, name string, credential []byte) (store.Passkey, error) {
	ctx := c.Request().Context()
	now := time.Now()
	fail := func(outcome string, err error) (store.Passkey, error) {
		s.passkeyOps.WithLabelValues(ceremonyRegister, outcome).Inc()
		return store.Passkey{}, err
	}
	cer, err := s.ceremonies.open(state, ceremonyRegister, u.ID, now)
	if err != nil {
		return fail("bad_state", errPasskeyState())
	}
	name, err = cleanPasskeyName(name, now)
	if err != nil {
		return fail("bad_request", err)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(credential)
	if err != nil {
		return fail("bad_request", problem.New(http.StatusBadRequest, "credential: not a WebAuthn registration response: "+shortError(err)))
	}
	if err := s.useChallenge(ctx, cer); err != nil {
		return fail("replay", err)
	}
	ps, err := s.cfg.Passkeys.Passkeys(ctx, u.ID)
	if err != nil {
		return store.Passkey{}, fmt.Errorf("passkeys: %w", err)
	}
	pu, err := newPasskeyUser(u, ps)
	if err != nil {
		return store.Passkey{}, err
	}
	cred, err := s.webauthn.CreateCredential(pu, cer.Session, parsed)
	if err != nil {
		s.log.Info("passkey registration refused", "user", u.ID, "err", err.Error())
		return fail("refused", problem.New(http.StatusBadRequest, "credential: not accepted: "+shortError(err)))
	}
	p := store.Passkey{
		ID: cred.ID, UserID: u.ID, Name: name, PublicKey: cred.PublicKey,
		AttestationType: truncate(cred.AttestationType, 64), AttestationFormat: truncate(cred.AttestationFormat, 64),
		AAGUID: cred.Authenticator.AAGUID, SignCount: cred.Authenticator.SignCount,
		UserVerified: cred.Flags.UserVerified, BackupEligible: cred.Flags.BackupEligible, BackupState: cred.Flags.BackupState,
		CreatedAt: now,
	}
	if len(p.AAGUID) != 16 {
		p.AAGUID = nil
	}
	for _, t := range cred.Transport {
		// What the client reports is only a hint for later logins: keep
		// the plausible values, drop the rest.
		if t := string(t); t != "" && len(t) <= 32 && !strings.ContainsAny(t, ", ") && len(p.Transports) < 8 {
			p.Transports = append(p.Transports, t)
		}
	}
	switch err := s.cfg.Passkeys.AddPasskey(ctx, p); {
	case errors.Is(err, store.ErrDuplicate):
		return fail("duplicate", problem.New(http.StatusConflict, "this passkey is registered already"))
	case errors.Is(err, store.ErrLimit):
		return fail("limit", problem.New(http.StatusConflict, fmt.Sprintf("you have %d passkeys, the most an account can have; remove one first", store.MaxPasskeys)))
	case err != nil:
		return store.Passkey{}, fmt.Errorf("passkeys: %w", err)
	}
	s.passkeyOps.WithLabelValues(ceremonyRegister, "ok").Inc()
	s.audit(c, u.ID, "user.passkey_registered", u.ID, map[string]string{
		"credential_id": credentialID(p.ID), "backup_eligible": fmt.Sprint(p.BackupEligible), "user_verified": fmt.Sprint(p.UserVerified),
	})
	// A passkey is a way in: tell the owner, in case it was not them.
	s.notify(u, "A passkey was added to your account", fmt.Sprintf("The passkey %q was added to your account on %s (UTC).\n\n"+
		"If it was not you, remove it at %s and change your password.\n",
		name, now.UTC().Format("2 January 2006 15:04"), strings.TrimRight(s.cfg.PublicURL, "/")+"/ui/account/passkeys"))
	return p, nil
}

// notify mails the user a notice, in the background (as sendToken does).
func (s *Server) notify(u store.User, subject, text string) {
	msg := mail.Message{To: u.Email, Subject: subject, Text: text}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.cfg.Mailer.Send(ctx, msg); err != nil {
			s.log.Error("mail not sent", "user", u.ID, "subject", subject, "err", err)
		}
	}()
}

// credentialID is a credential id as WebAuthn clients write it.
func credentialID(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }

// useChallenge records the ceremony's challenge as answered: a second
// answer to it is refused.
func (s *Server) useChallenge(ctx context.Context, cer ceremony) error {
	err := s.cfg.Passkeys.UseChallenge(ctx, sha256.Sum256([]byte(cer.Session.Challenge)), time.UnixMilli(cer.Expires))
	switch {
	case errors.Is(err, store.ErrReplay):
		return errPasskeyState()
	case err != nil:
		return fmt.Errorf("passkeys: %w", err)
	}
	return nil
}

// beginLogin starts a passkey login. With ident (the index key of the
// identifier the user typed) the passkey must be that account's; the
// answer is the same whether or not the account exists or has passkeys,
// and nothing is read to make it.
func (s *Server) beginLogin(ident *homeindex.Key) (*protocol.PublicKeyCredentialRequestOptions, string, error) {
	a, sd, err := s.webauthn.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationPreferred))
	if err != nil {
		return nil, "", fmt.Errorf("passkeys: begin login: %w", err)
	}
	cer := ceremony{Purpose: ceremonyLogin, Expires: sd.Expires.UnixMilli(), Session: *sd}
	if ident != nil {
		cer.Ident = ident[:]
	}
	tok, err := s.ceremonies.seal(cer)
	if err != nil {
		return nil, "", err
	}
	s.passkeyOps.WithLabelValues(ceremonyLogin, "begun").Inc()
	return &a.Response, tok, nil
}

// finishLogin checks the authenticator's answer to a login and returns
// the user it signs in, and whether the authenticator verified the user
// (which makes it two factors). Every refusal is errPasskeyLogin, except a
// malformed request (400), a used or expired state (400) and a passkey of
// another region's user (421).
func (s *Server) finishLogin(c echo.Context, state string, credential []byte) (store.User, bool, error) {
	ctx := c.Request().Context()
	now := time.Now()
	fail := func(outcome string, err error) (store.User, bool, error) {
		s.passkeyOps.WithLabelValues(ceremonyLogin, outcome).Inc()
		return store.User{}, false, err
	}
	cer, err := s.ceremonies.open(state, ceremonyLogin, "", now)
	if err != nil {
		return fail("bad_state", errPasskeyState())
	}
	if cer.Session.RelyingPartyID != s.webauthn.Config.RPID || cer.Session.Origin != "" || len(cer.Session.UserID) != 0 {
		// Begun by a node configured for another relying party.
		return fail("bad_state", errPasskeyState())
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(credential)
	if err != nil {
		return fail("bad_request", problem.New(http.StatusBadRequest, "credential: not a WebAuthn assertion: "+shortError(err)))
	}
	region, userID, ok := parseUserHandle(parsed.Response.UserHandle)
	if !ok {
		return fail("unknown", errPasskeyLogin())
	}
	if region != s.cfg.Name {
		// The router's home= hint sent it here, and it is wrong: the
		// client must send it to the passkey's region.
		s.refused.WithLabelValues("passkey_other_region").Inc()
		return fail("misrouted", problem.New(http.StatusMisdirectedRequest, "this passkey belongs to a user of region "+region+", not "+s.cfg.Name))
	}
	if err := s.useChallenge(ctx, cer); err != nil {
		return fail("replay", err)
	}
	u, err := s.cfg.Accounts.UserByID(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return fail("unknown", errPasskeyLogin())
	}
	if err != nil {
		return store.User{}, false, fmt.Errorf("passkeys: %w", err)
	}
	refuse := func(outcome, reason string) (store.User, bool, error) {
		s.auditAfterDetail(c, u.ID, "user.passkey_login_failed", u.ID, map[string]string{"reason": reason, "credential_id": credentialID(parsed.RawID)})
		return fail(outcome, errPasskeyLogin())
	}
	if u.Disabled {
		return refuse("refused", "disabled")
	}
	if cer.Ident != nil {
		if k := s.cfg.Hasher.EmailKey(u.Email); !bytes.Equal(cer.Ident, k[:]) {
			return refuse("refused", "other_account")
		}
	}
	ps, err := s.cfg.Passkeys.Passkeys(ctx, u.ID)
	if err != nil {
		return store.User{}, false, fmt.Errorf("passkeys: %w", err)
	}
	pu, err := newPasskeyUser(u, ps)
	if err != nil {
		return store.User{}, false, err
	}
	_, cred, err := s.webauthn.ValidatePasskeyLogin(func(_, _ []byte) (webauthn.User, error) { return pu, nil }, cer.Session, parsed)
	if err != nil {
		s.log.Info("passkey login refused", "user", u.ID, "err", err.Error())
		return refuse("refused", "verification")
	}
	if cred.Authenticator.CloneWarning {
		return s.cloned(c, u, parsed.RawID, fail)
	}
	err = s.cfg.Passkeys.UsePasskey(ctx, u.ID, cred.ID, store.PasskeyUse{
		SignCount: cred.Authenticator.SignCount, UserVerified: cred.Flags.UserVerified, BackupState: cred.Flags.BackupState, At: now,
	})
	switch {
	case errors.Is(err, store.ErrCounter):
		return s.cloned(c, u, parsed.RawID, fail) // a concurrent login got there first
	case errors.Is(err, store.ErrNotFound):
		return refuse("refused", "deleted") // removed meanwhile
	case err != nil:
		return store.User{}, false, fmt.Errorf("passkeys: %w", err)
	}
	uv := parsed.Response.AuthenticatorData.Flags.HasUserVerified()
	s.passkeyOps.WithLabelValues(ceremonyLogin, "ok").Inc()
	s.auditAfterDetail(c, u.ID, "user.passkey_login", u.ID, map[string]string{"credential_id": credentialID(cred.ID), "user_verified": fmt.Sprint(uv)})
	return u, uv, nil
}

// cloned refuses a login whose signature counter did not increase: two
// copies of the credential's private key may be in use.
func (s *Server) cloned(c echo.Context, u store.User, id []byte, fail func(string, error) (store.User, bool, error)) (store.User, bool, error) {
	s.log.Warn("passkey login refused: signature counter did not increase (cloned authenticator?)", "user", u.ID, "credential_id", credentialID(id))
	s.audit(c, u.ID, "user.passkey_counter_regressed", u.ID, map[string]string{"credential_id": credentialID(id)})
	return fail("counter", errPasskeyLogin())
}

// --- JSON API --------------------------------------------------------------

type passkeyFinishRequest struct {
	State      string          `json:"state"`
	Name       string          `json:"name"`
	Credential json.RawMessage `json:"credential"`
}

// passkeyView is a passkey as the API shows it.
type passkeyView struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	AAGUID         string     `json:"aaguid,omitempty"`
	Transports     []string   `json:"transports"`
	BackupEligible bool       `json:"backup_eligible"`
	BackupState    bool       `json:"backup_state"`
	CreatedAt      time.Time  `json:"created_at"`
	LastUsedAt     *time.Time `json:"last_used_at,omitempty"`
}

func viewPasskey(p store.Passkey) passkeyView {
	v := passkeyView{ID: credentialID(p.ID), Name: p.Name, Transports: p.Transports, BackupEligible: p.BackupEligible, BackupState: p.BackupState, CreatedAt: p.CreatedAt}
	if v.Transports == nil {
		v.Transports = []string{}
	}
	if len(p.AAGUID) == 16 && !bytes.Equal(p.AAGUID, make([]byte, 16)) {
		h := hex.EncodeToString(p.AAGUID)
		v.AAGUID = h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	}
	if !p.LastUsedAt.IsZero() {
		t := p.LastUsedAt
		v.LastUsedAt = &t
	}
	return v
}

// registerPasskeyBegin: POST /passkeys/register/begin (session).
func (s *Server) registerPasskeyBegin(c echo.Context) error {
	_, u, err := s.currentUser(c)
	if err != nil {
		return err
	}
	opts, tok, err := s.beginRegistration(c, u)
	if err != nil {
		return err
	}
	return beginAnswer(c, opts, tok)
}

// registerPasskeyFinish: POST /passkeys/register/finish (session)
// {"state", "name", "credential": PublicKeyCredential as JSON}.
func (s *Server) registerPasskeyFinish(c echo.Context) error {
	_, u, err := s.currentUser(c)
	if err != nil {
		return err
	}
	var in passkeyFinishRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if len(in.Credential) == 0 {
		return problem.New(http.StatusBadRequest, "credential: required")
	}
	p, err := s.finishRegistration(c, u, in.State, in.Name, in.Credential)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, viewPasskey(p))
}

// loginPasskeyBegin: POST /passkeys/login/begin, with an optional
// {"email"}.
func (s *Server) loginPasskeyBegin(c echo.Context) error {
	var in credentials
	if c.Request().ContentLength != 0 {
		if err := decodeJSON(c, &in); err != nil {
			return err
		}
	}
	var ident *homeindex.Key
	if in.Email != "" {
		email, err := homeindex.NormalizeEmail(in.Email)
		if err != nil {
			return problem.New(http.StatusBadRequest, "email: "+err.Error())
		}
		k := s.cfg.Hasher.EmailKey(email)
		if err := s.routedBy(c, k); err != nil {
			return err
		}
		ident = &k
	}
	opts, tok, err := s.beginLogin(ident)
	if err != nil {
		return err
	}
	return beginAnswer(c, opts, tok)
}

// loginPasskeyFinish: POST /passkeys/login/finish?home=<region of the
// user handle> {"state", "credential"}. A passkey that verified the user
// opens a session; one that did not, for a user with TOTP, asks for the
// code as a password does.
func (s *Server) loginPasskeyFinish(c echo.Context) error {
	var in passkeyFinishRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if len(in.Credential) == 0 {
		return problem.New(http.StatusBadRequest, "credential: required")
	}
	u, uv, err := s.finishLogin(c, in.State, in.Credential)
	if err != nil {
		return err
	}
	if !uv {
		if need, err := s.mfaRequired(c.Request().Context(), u.ID); err != nil {
			return fmt.Errorf("login: %w", err)
		} else if need {
			return s.startMFALogin(c, u)
		}
		return s.startSession(c, u, methodPasskey)
	}
	return s.startSession(c, u, methodPasskeyUV)
}

// listPasskeys: GET /passkeys (session).
func (s *Server) listPasskeys(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	ps, err := s.cfg.Passkeys.Passkeys(c.Request().Context(), sess.UserID)
	if err != nil {
		return fmt.Errorf("passkeys: %w", err)
	}
	out := make([]passkeyView, len(ps))
	for i, p := range ps {
		out[i] = viewPasskey(p)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{"passkeys": out})
}

// passkeyParam reads the credential id of the path.
func passkeyParam(c echo.Context) ([]byte, error) {
	id, err := base64.RawURLEncoding.DecodeString(c.Param("id"))
	if err != nil || len(id) == 0 || len(id) > store.MaxCredentialIDBytes {
		return nil, problem.New(http.StatusBadRequest, "id: not a base64url credential id")
	}
	return id, nil
}

// deletePasskey: DELETE /passkeys/:id (session).
func (s *Server) deletePasskey(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	id, err := passkeyParam(c)
	if err != nil {
		return err
	}
	if err := s.removePasskey(c, sess.UserID, id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// removePasskey deletes one of the user's passkeys (404 if not theirs).
func (s *Server) removePasskey(c echo.Context, userID string, id []byte) error {
	err := s.cfg.Passkeys.DeletePasskey(c.Request().Context(), userID, id)
	if errors.Is(err, store.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no such passkey")
	}
	if err != nil {
		return fmt.Errorf("passkeys: %w", err)
	}
	s.audit(c, userID, "user.passkey_deleted", userID, map[string]string{"credential_id": credentialID(id)})
	return nil
}

// renamePasskey: PATCH /passkeys/:id (session) {"name"}.
func (s *Server) renamePasskey(c echo.Context) error {
	sess, err := s.authenticated(c)
	if err != nil {
		return err
	}
	id, err := passkeyParam(c)
	if err != nil {
		return err
	}
	var in struct {
		Name *string `json:"name"`
	}
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if in.Name == nil {
		return problem.New(http.StatusBadRequest, "name: required")
	}
	name, err := cleanPasskeyName(*in.Name, time.Now())
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	err = s.cfg.Passkeys.RenamePasskey(ctx, sess.UserID, id, name)
	if errors.Is(err, store.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no such passkey")
	}
	if err != nil {
		return fmt.Errorf("passkeys: %w", err)
	}
	s.audit(c, sess.UserID, "user.passkey_renamed", sess.UserID, map[string]string{"credential_id": credentialID(id)})
	ps, err := s.cfg.Passkeys.Passkeys(ctx, sess.UserID)
	if err != nil {
		return fmt.Errorf("passkeys: %w", err)
	}
	for _, p := range ps {
		if bytes.Equal(p.ID, id) {
			return c.JSON(http.StatusOK, viewPasskey(p))
		}
	}
	return problem.New(http.StatusNotFound, "no such passkey")
}
