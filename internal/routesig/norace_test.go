//go:build !race

package routesig

const raceEnabled = false
