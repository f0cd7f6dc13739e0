//go:build race

package routesig

const raceEnabled = true
