package testenv

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

// DefaultRedis is the Redis server tests use unless DOMICILE_TEST_REDIS names
// another.
const DefaultRedis = "127.0.0.1:6379"

// RedisAddr returns the address of a Redis server that answered PING. When it
// does not answer the test is skipped, or failed if CI=true.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := envOr("DOMICILE_TEST_REDIS", DefaultRedis)
	// One dial, no retries: a missing server should be reported at once.
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		unavailable(t, "Redis", addr, err)
	}
	return addr
}

// RedisPrefix returns a key prefix that only this test uses, on the server
// RedisAddr returns (so it skips or fails the same way). t.Cleanup deletes
// every key under the prefix.
func RedisPrefix(t testing.TB) string {
	t.Helper()
	addr := RedisAddr(t)
	prefix := "domicile:" + uniqueName(t, "test") + ":"
	t.Cleanup(func() {
		client := redis.NewClient(&redis.Options{Addr: addr})
		defer client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		defer cancel()
		if err := deletePrefix(ctx, client, prefix); err != nil {
			t.Errorf("testenv: delete Redis keys %s*: %v", prefix, err)
		}
	})
	return prefix
}

// deletePrefix removes every key starting with prefix. SCAN rather than KEYS,
// so a shared server is never blocked.
func deletePrefix(ctx context.Context, client *redis.Client, prefix string) error {
	iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 100 {
			if err := client.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return client.Unlink(ctx, batch...).Err()
	}
	return nil
}
