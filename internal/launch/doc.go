// Package launch assembles running servers from their configuration: a
// router (with its home-index replica) or a regional node (with its
// database and session store). The `domicile router` and `domicile region`
// commands read a YAML file into RouterConfig or RegionConfig; `domicile
// dev` builds the same structs for its local topology, so both paths run
// the same code.
package launch
