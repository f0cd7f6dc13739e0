package oidc

import "testing"

func TestMultiFactor(t *testing.T) {
	for _, c := range []struct {
		amr  []string
		want bool
	}{
		{nil, false},
		{[]string{"pwd"}, false},
		{[]string{"hwk"}, false},
		{[]string{"pwd", "otp"}, true},
		{[]string{"pwd", "otp", "mfa"}, true},
		{[]string{"hwk", "user", "mfa"}, true},
		{[]string{"swk", "user"}, true},
		{[]string{"otp"}, false},
	} {
		if got := MultiFactor(c.amr); got != c.want {
			t.Errorf("MultiFactor(%v) = %v, want %v", c.amr, got, c.want)
		}
		if got := acrOf(c.amr); (got == ACRMFA) != c.want {
			t.Errorf("acrOf(%v) = %q", c.amr, got)
		}
	}
	if !wantsMFA([]string{"urn:x", ACRPAPEMultiFactor}) || !wantsMFA([]string{"mfa"}) || wantsMFA([]string{"pwd"}) || wantsMFA(nil) {
		t.Error("wantsMFA")
	}
}
