// Package dev holds the files of the local development topology that the
// binary embeds, so `domicile dev` works from any directory.
package dev

import _ "embed"

// Policy is deploy/dev/policy.yaml.
//
//go:embed policy.yaml
var Policy []byte
