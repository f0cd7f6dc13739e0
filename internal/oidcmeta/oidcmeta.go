// Package oidcmeta holds the OpenID Connect metadata that the routers'
// global discovery document and the regions' providers must agree on.
package oidcmeta

var (
	// Scopes the providers know.
	Scopes = []string{"openid", "profile", "email", "offline_access"}
	// Claims the providers put in ID tokens and userinfo.
	Claims = []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid",
		"at_hash", "c_hash", "email", "email_verified", "name"}
	// ACRValues ask for multi-factor authentication (step-up).
	ACRValues = []string{"mfa", "http://schemas.openid.net/pape/policies/2007/06/multi-factor"}
	// Prompts the providers honour.
	Prompts = []string{"none", "login", "consent", "select_account"}
)
