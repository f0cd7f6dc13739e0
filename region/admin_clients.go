package region

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/oidc"
	"github.com/domicile/domicile/region/store"
)

// ClientAdmin is the OAuth/OpenID client registry the admin API writes.
// *store.DB implements it.
type ClientAdmin interface {
	CreateClient(ctx context.Context, c store.Client) error
	Client(ctx context.Context, id string) (store.Client, error)
	ListClients(ctx context.Context, after string, limit int) ([]store.Client, error)
	UpdateClient(ctx context.Context, c store.Client) error
	SetClientSecret(ctx context.Context, id string, hash []byte) error
	DeleteClient(ctx context.Context, id string) error
}

// Token endpoint authentication methods of a client (RFC 7591).
const (
	authMethodNone  = "none"
	authMethodBasic = "client_secret_basic"
)

// clientDoc is a client as the admin API reads and writes it (the names
// of RFC 7591 client metadata). Lifetimes are in seconds, 0 for the
// provider's default. The secret appears once: in the answer that made it.
type clientDoc struct {
	ClientID                string   `json:"client_id"`
	ClientName              string   `json:"client_name,omitempty"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	RedirectURIs            []string `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string `json:"post_logout_redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	Scopes                  []string `json:"scopes"`
	BackchannelLogoutURI    string   `json:"backchannel_logout_uri,omitempty"`
	AccessTokenTTL          int64    `json:"access_token_ttl,omitempty"`
	IDTokenTTL              int64    `json:"id_token_ttl,omitempty"`
	RefreshTokenTTL         int64    `json:"refresh_token_ttl,omitempty"`
	CreatedAt               string   `json:"created_at,omitempty"`
	UpdatedAt               string   `json:"updated_at,omitempty"`
	ClientSecret            string   `json:"client_secret,omitempty"`
}

func clientView(c store.Client) clientDoc {
	d := clientDoc{
		ClientID: c.ID, ClientName: c.Name, TokenEndpointAuthMethod: authMethodBasic,
		RedirectURIs: orEmpty(c.RedirectURIs), PostLogoutRedirectURIs: orEmpty(c.PostLogoutRedirectURIs),
		GrantTypes: orEmpty(c.GrantTypes), Scopes: orEmpty(c.Scopes), BackchannelLogoutURI: c.BackchannelLogoutURI,
		AccessTokenTTL: int64(c.AccessTokenTTL.Seconds()), IDTokenTTL: int64(c.IDTokenTTL.Seconds()), RefreshTokenTTL: int64(c.RefreshTokenTTL.Seconds()),
		CreatedAt: c.CreatedAt.Format(time.RFC3339), UpdatedAt: c.UpdatedAt.Format(time.RFC3339),
	}
	if c.Public() {
		d.TokenEndpointAuthMethod = authMethodNone
	}
	return d
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// record turns a document into a client record (without secret) and
// checks it.
func (d clientDoc) record() (store.Client, error) {
	c := store.Client{
		ID: d.ClientID, Name: d.ClientName, RedirectURIs: d.RedirectURIs, PostLogoutRedirectURIs: d.PostLogoutRedirectURIs,
		GrantTypes: d.GrantTypes, Scopes: d.Scopes, BackchannelLogoutURI: d.BackchannelLogoutURI,
		AccessTokenTTL: time.Duration(d.AccessTokenTTL) * time.Second, IDTokenTTL: time.Duration(d.IDTokenTTL) * time.Second,
		RefreshTokenTTL: time.Duration(d.RefreshTokenTTL) * time.Second,
	}
	if len(c.GrantTypes) == 0 {
		c.GrantTypes = []string{oidc.GrantAuthorizationCode}
	}
	if len(c.Scopes) == 0 {
		c.Scopes = slices.Clone(oidc.DefaultScopes)
	}
	if d.AccessTokenTTL < 0 || d.IDTokenTTL < 0 || d.RefreshTokenTTL < 0 {
		return c, problem.New(http.StatusBadRequest, "token lifetimes: not negative")
	}
	switch d.TokenEndpointAuthMethod {
	case "", authMethodBasic, "client_secret_post":
		c.SecretHash = make([]byte, 32) // placeholder: confidential; the real hash is set by the caller
	case authMethodNone:
	default:
		return c, problem.New(http.StatusBadRequest, fmt.Sprintf("token_endpoint_auth_method: %q: want client_secret_basic or none", d.TokenEndpointAuthMethod))
	}
	if err := oidc.ValidateClient(c); err != nil {
		return c, problem.New(http.StatusBadRequest, err.Error())
	}
	return c, nil
}

// forgetClient makes this node's provider read the client again.
func (s *Server) forgetClient(id string) {
	if s.oidc != nil {
		s.oidc.ForgetClient(id)
	}
}

// adminCreateClient registers a client. A confidential client's secret is
// generated and returned in this answer only; the registry keeps its
// SHA-256. Without client_id, one is generated.
func (s *Server) adminCreateClient(c echo.Context) error {
	var d clientDoc
	if err := decodeJSON(c, &d); err != nil {
		return err
	}
	if d.ClientID == "" {
		id, err := newClientID()
		if err != nil {
			return err
		}
		d.ClientID = id
	}
	rec, err := d.record()
	if err != nil {
		return err
	}
	secret := ""
	if !rec.Public() {
		if secret, rec.SecretHash, err = oidc.NewSecret(); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	if err := s.cfg.ClientAdmin.CreateClient(ctx, rec); err != nil {
		if errors.Is(err, store.ErrDuplicate) {
			return problem.New(http.StatusConflict, "a client with this client_id exists")
		}
		return fmt.Errorf("admin: %w", err)
	}
	s.forgetClient(rec.ID)
	s.audit(c, "admin", "admin.client_created", rec.ID, nil)
	saved, err := s.cfg.ClientAdmin.Client(ctx, rec.ID)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	out := clientView(saved)
	out.ClientSecret = secret
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set("Location", "/admin/v1/clients/"+rec.ID)
	return c.JSON(http.StatusCreated, out)
}

func newClientID() (string, error) {
	secret, _, err := oidc.NewSecret()
	if err != nil {
		return "", err
	}
	return "c-" + secret[:22], nil
}

// adminListClients lists clients a page at a time (?after=<id>, ?limit=).
func (s *Server) adminListClients(c echo.Context) error {
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	list, err := s.cfg.ClientAdmin.ListClients(c.Request().Context(), c.QueryParam("after"), limit)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	out := make([]clientDoc, len(list))
	for i, cl := range list {
		out[i] = clientView(cl)
	}
	return writePage(c, "clients", out, limit, func() string { return list[len(list)-1].ID })
}

// adminClient loads the client named in the path.
func (s *Server) adminClient(c echo.Context) (store.Client, error) {
	return adminLoad(s, c, "client", s.cfg.ClientAdmin.Client)
}

func (s *Server) adminGetClient(c echo.Context) error {
	cl, err := s.adminClient(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, clientView(cl))
}

// adminUpdateClient replaces a client's metadata (PUT: the whole document).
// Its secret stays; making a client public or confidential is not an
// update (delete and register it again).
func (s *Server) adminUpdateClient(c echo.Context) error {
	old, err := s.adminClient(c)
	if err != nil {
		return err
	}
	var d clientDoc
	if err := decodeJSON(c, &d); err != nil {
		return err
	}
	if d.ClientID != "" && d.ClientID != old.ID {
		return problem.New(http.StatusBadRequest, "client_id: cannot be changed")
	}
	d.ClientID = old.ID
	if d.TokenEndpointAuthMethod == "" {
		d.TokenEndpointAuthMethod = clientView(old).TokenEndpointAuthMethod
	}
	rec, err := d.record()
	if err != nil {
		return err
	}
	if rec.Public() != old.Public() {
		return problem.New(http.StatusBadRequest, "token_endpoint_auth_method: cannot be changed; register the client again")
	}
	ctx := c.Request().Context()
	if err := s.cfg.ClientAdmin.UpdateClient(ctx, rec); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return problem.New(http.StatusNotFound, "no such client in region "+s.cfg.Name)
		}
		return fmt.Errorf("admin: %w", err)
	}
	s.forgetClient(old.ID)
	s.audit(c, "admin", "admin.client_updated", old.ID, nil)
	saved, err := s.cfg.ClientAdmin.Client(ctx, old.ID)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return c.JSON(http.StatusOK, clientView(saved))
}

// adminRotateClientSecret gives a confidential client a new secret,
// returned in this answer only; the old one stops working at once.
func (s *Server) adminRotateClientSecret(c echo.Context) error {
	cl, err := s.adminClient(c)
	if err != nil {
		return err
	}
	if cl.Public() {
		return problem.New(http.StatusConflict, "a public client has no secret")
	}
	secret, hash, err := oidc.NewSecret()
	if err != nil {
		return err
	}
	if err := s.cfg.ClientAdmin.SetClientSecret(c.Request().Context(), cl.ID, hash); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	s.forgetClient(cl.ID)
	s.audit(c, "admin", "admin.client_secret_rotated", cl.ID, nil)
	cl.SecretHash = hash
	out := clientView(cl)
	out.ClientSecret = secret
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, out)
}

func (s *Server) adminDeleteClient(c echo.Context) error {
	id := c.Param("id")
	if err := s.cfg.ClientAdmin.DeleteClient(c.Request().Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return problem.New(http.StatusNotFound, "no such client in region "+s.cfg.Name)
		}
		return fmt.Errorf("admin: %w", err)
	}
	s.forgetClient(id)
	s.audit(c, "admin", "admin.client_deleted", id, nil)
	return c.NoContent(http.StatusNoContent)
}

// adminRotateOIDCKey makes a new OpenID signing key the signer; the old
// one stays published until the tokens it signed have expired.
func (s *Server) adminRotateOIDCKey(c echo.Context) error {
	kid, err := s.oidc.Keys().Rotate(time.Now())
	if err != nil {
		return fmt.Errorf("admin: rotate oidc key: %w", err)
	}
	s.audit(c, "admin", "admin.oidc_key_rotated", kid, nil)
	return c.JSON(http.StatusOK, map[string]string{"signing_kid": kid})
}
