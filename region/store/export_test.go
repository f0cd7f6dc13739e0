package store

// MigrationCount is the schema version Open brings a database of the given
// driver to.
func MigrationCount(driver string) int { return len(dialects[driver].migrations) }
