// Package oidcmeta holds the OpenID Connect metadata that the routers'
// global discovery document and the regions' providers must agree on: the
// endpoint paths (under the one issuer), what is supported, and the
// discovery document itself.
package oidcmeta

// Endpoint paths under the issuer. The routers serve discovery, the
// union JWKS and the session keys; the regions serve the rest (each for
// the requests the routers send it).
const (
	PathDiscovery   = "/.well-known/openid-configuration"
	PathKeys        = "/oauth2/keys"
	PathSessionKeys = "/.well-known/session-keys"
	PathAuthorize   = "/oauth2/authorize"
	PathToken       = "/oauth2/token"
	PathIntrospect  = "/oauth2/introspect"
	PathRevoke      = "/oauth2/revoke"
	PathUserinfo    = "/userinfo"
	PathLogout      = "/oauth2/logout"
)

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
	// GrantTypes the providers offer (no implicit, no password grant).
	GrantTypes = []string{"authorization_code", "refresh_token", "client_credentials"}
)

// Discovery is the OpenID Provider metadata (OpenID Connect Discovery 1.0,
// RFC 8414).
type Discovery struct {
	Issuer                                    string   `json:"issuer"`
	AuthorizationEndpoint                     string   `json:"authorization_endpoint"`
	TokenEndpoint                             string   `json:"token_endpoint"`
	IntrospectionEndpoint                     string   `json:"introspection_endpoint"`
	RevocationEndpoint                        string   `json:"revocation_endpoint"`
	UserinfoEndpoint                          string   `json:"userinfo_endpoint"`
	EndSessionEndpoint                        string   `json:"end_session_endpoint"`
	JWKSURI                                   string   `json:"jwks_uri"`
	ScopesSupported                           []string `json:"scopes_supported"`
	ResponseTypesSupported                    []string `json:"response_types_supported"`
	ResponseModesSupported                    []string `json:"response_modes_supported"`
	GrantTypesSupported                       []string `json:"grant_types_supported"`
	SubjectTypesSupported                     []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported          []string `json:"id_token_signing_alg_values_supported"`
	TokenEndpointAuthMethodsSupported         []string `json:"token_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethodsSupported []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported    []string `json:"revocation_endpoint_auth_methods_supported"`
	CodeChallengeMethodsSupported             []string `json:"code_challenge_methods_supported"`
	ClaimsSupported                           []string `json:"claims_supported"`
	ACRValuesSupported                        []string `json:"acr_values_supported"`
	PromptValuesSupported                     []string `json:"prompt_values_supported"`
	// RFC 9207: authorization responses carry iss.
	AuthorizationResponseISSParameter bool `json:"authorization_response_iss_parameter_supported"`
	BackchannelLogoutSupported        bool `json:"backchannel_logout_supported"`
	BackchannelLogoutSessionSupported bool `json:"backchannel_logout_session_supported"`
	RequestParameterSupported         bool `json:"request_parameter_supported"`
	RequestURIParameterSupported      bool `json:"request_uri_parameter_supported"`
	ClaimsParameterSupported          bool `json:"claims_parameter_supported"`
}

// NewDiscovery returns the metadata of the deployment whose issuer is
// issuer, with ID tokens signed with algs.
func NewDiscovery(issuer string, algs []string, backchannel bool) Discovery {
	auth := []string{"client_secret_basic", "client_secret_post", "none"}
	return Discovery{
		Issuer:                                    issuer,
		AuthorizationEndpoint:                     issuer + PathAuthorize,
		TokenEndpoint:                             issuer + PathToken,
		IntrospectionEndpoint:                     issuer + PathIntrospect,
		RevocationEndpoint:                        issuer + PathRevoke,
		UserinfoEndpoint:                          issuer + PathUserinfo,
		EndSessionEndpoint:                        issuer + PathLogout,
		JWKSURI:                                   issuer + PathKeys,
		ScopesSupported:                           Scopes,
		ResponseTypesSupported:                    []string{"code"},
		ResponseModesSupported:                    []string{"query", "fragment"},
		GrantTypesSupported:                       GrantTypes,
		SubjectTypesSupported:                     []string{"public"},
		IDTokenSigningAlgValuesSupported:          algs,
		TokenEndpointAuthMethodsSupported:         auth,
		IntrospectionEndpointAuthMethodsSupported: auth[:2], // only confidential clients introspect
		RevocationEndpointAuthMethodsSupported:    auth,
		CodeChallengeMethodsSupported:             []string{"S256"},
		ClaimsSupported:                           Claims,
		ACRValuesSupported:                        ACRValues,
		PromptValuesSupported:                     Prompts,
		AuthorizationResponseISSParameter:         true,
		BackchannelLogoutSupported:                backchannel,
		BackchannelLogoutSessionSupported:         backchannel,
	}
}
