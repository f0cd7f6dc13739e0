// Package problem writes HTTP errors as RFC 9457 problem details
// (application/problem+json). Each server maps its errors to the wire in
// exactly one place: the echo error handler returned by ErrorHandler.
package problem

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// ContentType is the media type of a problem document.
const ContentType = "application/problem+json"

// Problem is an RFC 9457 problem details object. It is also an error, so
// handlers can return it and the error handler writes it as is.
type Problem struct {
	Type     string `json:"type,omitempty"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Errors lists individual problems (e.g. every validation error at once).
	Errors any `json:"errors,omitempty"`
	// RetryAfter, when positive, is sent as the Retry-After header (seconds).
	RetryAfter int `json:"-"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Title + ": " + p.Detail
	}
	return p.Title
}

// New returns a problem with the standard title for status.
func New(status int, detail string) *Problem {
	return &Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail}
}

// Write sends p as application/problem+json.
func Write(w http.ResponseWriter, p *Problem) {
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// ErrorHandler maps every error a handler returns to a problem document.
// Errors that are neither a *Problem nor an *echo.HTTPError become a 500
// whose detail is not sent to the client (it is logged instead).
func ErrorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var p *Problem
		var he *echo.HTTPError
		switch {
		case errors.As(err, &p):
		case errors.As(err, &he):
			detail := ""
			if m, ok := he.Message.(string); ok && m != http.StatusText(he.Code) {
				detail = m
			}
			p = New(he.Code, detail)
		default:
			logger.Error("internal error", "method", c.Request().Method, "path", c.Path(), "err", err)
			p = New(http.StatusInternalServerError, "")
		}
		p.Instance = c.Request().URL.Path
		if c.Request().Method == http.MethodHead {
			c.Response().Header().Set("Content-Type", ContentType)
			c.Response().WriteHeader(p.Status)
			return
		}
		Write(c.Response(), p)
	}
}
