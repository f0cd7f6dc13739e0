package region

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/domicile/domicile/homeindex"
	"github.com/domicile/domicile/internal/problem"
	"github.com/domicile/domicile/region/store"
)

// AdminStore is what the admin API needs beyond Accounts and MFA.
// *store.DB implements it.
type AdminStore interface {
	ListUsers(ctx context.Context, after string, limit int) ([]store.User, error)
	SetDisabled(ctx context.Context, id string, disabled bool) error
}

// adminAuth guards /admin/v1 with the deployment's admin token (Bearer,
// compared in constant time).
func (s *Server) adminAuth(next echo.HandlerFunc) echo.HandlerFunc {
	want := []byte("Bearer " + s.cfg.AdminToken)
	return func(c echo.Context) error {
		if s.cfg.AdminToken == "" || subtle.ConstantTimeCompare([]byte(c.Request().Header.Get("Authorization")), want) != 1 {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="domicile-region-admin"`)
			return problem.New(http.StatusUnauthorized, "admin token required")
		}
		return next(c)
	}
}

// adminUser is a user as the admin API shows it.
type adminUser struct {
	ID            string            `json:"id"`
	Email         string            `json:"email"`
	Name          string            `json:"name,omitempty"`
	EmailVerified bool              `json:"email_verified"`
	Disabled      bool              `json:"disabled"`
	MFA           bool              `json:"mfa"`
	Passkeys      int               `json:"passkeys"`
	Attributes    map[string]string `json:"attributes,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
}

func (s *Server) adminView(c echo.Context, u store.User) adminUser {
	mfa, _ := s.mfaRequired(c.Request().Context(), u.ID)
	pks, _ := s.cfg.Passkeys.Passkeys(c.Request().Context(), u.ID)
	return adminUser{ID: u.ID, Email: u.Email, Name: u.Name, EmailVerified: u.EmailVerified, Disabled: u.Disabled, MFA: mfa, Passkeys: len(pks),
		Attributes: u.Attributes, CreatedAt: u.CreatedAt}
}

// adminListUsers lists the region's users a page at a time (?after=<id>,
// ?limit=), or finds one by ?email=.
func (s *Server) adminListUsers(c echo.Context) error {
	ctx := c.Request().Context()
	if q := c.QueryParam("email"); q != "" {
		email, err := homeindex.NormalizeEmail(q)
		if err != nil {
			return problem.New(http.StatusBadRequest, "email: "+err.Error())
		}
		u, err := s.cfg.Users.UserByEmail(ctx, email)
		if errors.Is(err, store.ErrNotFound) {
			return c.JSON(http.StatusOK, map[string]any{"users": []adminUser{}})
		}
		if err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		return c.JSON(http.StatusOK, map[string]any{"users": []adminUser{s.adminView(c, u)}})
	}
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	users, err := s.cfg.Admin.ListUsers(ctx, c.QueryParam("after"), limit)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	out := make([]adminUser, len(users))
	for i, u := range users {
		out[i] = s.adminView(c, u)
	}
	return writePage(c, "users", out, limit, func() string { return users[len(users)-1].ID })
}

// pageLimit reads the ?limit= of an admin list: 1 to 1000, 100 if absent.
func pageLimit(c echo.Context) (int, error) {
	l := c.QueryParam("limit")
	if l == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > 1000 {
		return 0, problem.New(http.StatusBadRequest, "limit: want 1 to 1000")
	}
	return n, nil
}

// writePage writes one page of an admin list under key; a full page also
// carries "next", the cursor (lastID) for ?after=.
func writePage[T any](c echo.Context, key string, items []T, limit int, lastID func() string) error {
	res := map[string]any{key: items}
	if len(items) == limit {
		res["next"] = lastID()
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, res)
}

// adminLoad loads the thing (what: "user", "client") named by the path's
// id with load: a 404 problem if this region has none.
func adminLoad[T any](s *Server, c echo.Context, what string, load func(context.Context, string) (T, error)) (T, error) {
	v, err := load(c.Request().Context(), c.Param("id"))
	if errors.Is(err, store.ErrNotFound) {
		return v, problem.New(http.StatusNotFound, "no such "+what+" in region "+s.cfg.Name)
	}
	if err != nil {
		return v, fmt.Errorf("admin: %w", err)
	}
	return v, nil
}

// adminTarget loads the user named in the path.
func (s *Server) adminTarget(c echo.Context) (store.User, error) {
	return adminLoad(s, c, "user", s.cfg.Accounts.UserByID)
}

func (s *Server) adminGetUser(c echo.Context) error {
	u, err := s.adminTarget(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.adminView(c, u))
}

// adminDisable disables or re-enables an account ({"disabled": bool}); a
// disabled account cannot log in.
func (s *Server) adminDisable(c echo.Context) error {
	u, err := s.adminTarget(c)
	if err != nil {
		return err
	}
	var in struct {
		Disabled *bool `json:"disabled"`
	}
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if in.Disabled == nil {
		return problem.New(http.StatusBadRequest, "disabled: required (true or false)")
	}
	if err := s.cfg.Admin.SetDisabled(c.Request().Context(), u.ID, *in.Disabled); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	s.audit(c, "admin", map[bool]string{true: "admin.user_disabled", false: "admin.user_enabled"}[*in.Disabled], u.ID, nil)
	u.Disabled = *in.Disabled
	return c.JSON(http.StatusOK, s.adminView(c, u))
}

// adminResetMFA removes a user's second factors and passkeys (a lost or
// stolen device): they sign in with their password again.
func (s *Server) adminResetMFA(c echo.Context) error {
	u, err := s.adminTarget(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := s.cfg.MFA.DeleteTOTP(ctx, u.ID); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	n, err := s.cfg.Passkeys.DeletePasskeys(ctx, u.ID)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	s.audit(c, "admin", "admin.mfa_reset", u.ID, map[string]string{"passkeys_removed": fmt.Sprint(n)})
	s.forgetDevices(c, "admin", u.ID)
	return c.NoContent(http.StatusNoContent)
}

// adminDeleteUser erases a user as DELETE /account does.
func (s *Server) adminDeleteUser(c echo.Context) error {
	u, err := s.adminTarget(c)
	if err != nil {
		return err
	}
	if err := s.erase(c, u); err != nil {
		return err
	}
	s.audit(c, "admin", "admin.user_deleted", u.ID, nil)
	return c.NoContent(http.StatusNoContent)
}
