package store

import "context"

// MigrationCount is the schema version Open brings a database of the given
// driver to.
func MigrationCount(driver string) int { return len(dialects[driver].migrations) }

// OpenAt is Open, migrating the schema only up to version.
func OpenAt(ctx context.Context, cfg Config, version int) (*DB, error) {
	return open(ctx, cfg, version)
}

// DecryptColumn decrypts a ciphertext read from the given column of the
// user's row with the user's current data key, as the store does.
func DecryptColumn(ctx context.Context, db *DB, userID, column string, ciphertext []byte) ([]byte, error) {
	key, err := db.userKey(ctx, userID)
	if err != nil {
		return nil, err
	}
	return key.open(column, ciphertext)
}

// KeyStoreTable is the key store's table name, as the store queries it
// (schema-qualified where it needs to be).
func KeyStoreTable(db *DB) string { return db.keys.table }
