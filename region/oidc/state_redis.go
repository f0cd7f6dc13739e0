package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisState is a State on the home region's Redis (go-redis/v9). Every
// check-and-change is one Lua script, so it is atomic on the server:
//
//	<prefix>code:<sha256(code)>    hash g=grant JSON, u=1 once used     TTL: code lifetime, then 10m after use
//	<prefix>rt:<sha256(token)>     family id (current and rotated tokens) TTL: the family's end
//	<prefix>fam:<id>               hash g=family JSON, cur=sha256(token)  TTL: the family's end
//	<prefix>famrev:<id>            "1": family revoked                    TTL: the family's end + MaxTokenTTL
//	<prefix>jti:<jti>              "1": access token revoked              TTL: the token's expiry
//	<prefix>sid:<sha256(sid)>      hash c:<client>=1, f:<family>=1       TTL: the session's end
//
// Tokens appear only hashed. The scripts that follow a refresh token to its
// family, and a session to its families, name keys they compute: fine on
// one server or Sentinel, not on Redis Cluster (which would need hash tags).
type RedisState struct {
	client    redis.UniversalClient
	prefix    string
	accessTTL time.Duration
	now       func() time.Time
}

var _ State = (*RedisState)(nil)

// NewRedisState keeps state in client under keys starting with prefix
// (e.g. "domicile:eu-west:oidc:"). The caller owns client.
func NewRedisState(client redis.UniversalClient, prefix string) *RedisState {
	return &RedisState{client: client, prefix: prefix, accessTTL: MaxTokenTTL, now: time.Now}
}

func (r *RedisState) key(kind, id string) string { return r.prefix + kind + ":" + id }

func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

func (r *RedisState) PutCode(ctx context.Context, code string, g Grant, ttl time.Duration) error {
	if ttl <= 0 {
		return errors.New("oidc state: put code: ttl not positive")
	}
	js, err := json.Marshal(g)
	if err != nil {
		return fmt.Errorf("oidc state: put code: %w", err)
	}
	k := r.key("code", hashHex(code))
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, k, "g", js)
		p.PExpire(ctx, k, ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("oidc state: put code: redis: %w", err)
	}
	return nil
}

func (r *RedisState) PeekCode(ctx context.Context, code string) (Grant, bool, error) {
	v, err := r.client.HMGet(ctx, r.key("code", hashHex(code)), "g", "u").Result()
	if err != nil {
		return Grant{}, false, fmt.Errorf("oidc state: peek code: redis: %w", err)
	}
	gs, ok := v[0].(string)
	if !ok {
		return Grant{}, false, ErrNotFound
	}
	var g Grant
	if err := json.Unmarshal([]byte(gs), &g); err != nil {
		return Grant{}, false, fmt.Errorf("oidc state: peek code: %w", err)
	}
	return g, v[1] != nil, nil
}

var useCodeScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'g', 'u')
if not v[1] then return false end
if v[2] then return {0, v[1]} end
redis.call('HSET', KEYS[1], 'u', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {1, v[1]}
`)

func (r *RedisState) UseCode(ctx context.Context, code string) (Grant, error) {
	res, err := useCodeScript.Run(ctx, r.client, []string{r.key("code", hashHex(code))}, ms(usedCodeTTL)).Slice()
	if errors.Is(err, redis.Nil) {
		return Grant{}, ErrNotFound
	}
	if err != nil || len(res) != 2 {
		return Grant{}, fmt.Errorf("oidc state: use code: redis: %v", cmpErr(err, "bad reply"))
	}
	var g Grant
	if err := json.Unmarshal([]byte(fmt.Sprint(res[1])), &g); err != nil {
		return Grant{}, fmt.Errorf("oidc state: use code: %w", err)
	}
	if n, _ := res[0].(int64); n != 1 {
		return g, ErrCodeUsed
	}
	return g, nil
}

func cmpErr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}

func (r *RedisState) StartFamily(ctx context.Context, f Family, token string) error {
	exp := time.Unix(f.Expiry, 0)
	if !r.now().Before(exp) {
		return errors.New("oidc state: start family: already expired")
	}
	js, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("oidc state: start family: %w", err)
	}
	h := hashHex(token)
	fk, tk := r.key("fam", f.ID), r.key("rt", h)
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, fk, "g", js, "cur", h)
		p.PExpireAt(ctx, fk, exp)
		p.Set(ctx, tk, f.ID, 0)
		p.PExpireAt(ctx, tk, exp)
		return nil
	})
	if err != nil {
		return fmt.Errorf("oidc state: start family: redis: %w", err)
	}
	return nil
}

// refreshScript follows a refresh token to its family. With ARGV[4] "use",
// a token that is not the family's current one revokes the family.
var refreshScript = redis.NewScript(`
local fid = redis.call('GET', KEYS[1])
if not fid then return {'notfound'} end
local fk = ARGV[1] .. 'fam:' .. fid
local rk = ARGV[1] .. 'famrev:' .. fid
if redis.call('EXISTS', rk) == 1 then return {'revoked', fid} end
local v = redis.call('HMGET', fk, 'g', 'cur')
if not v[1] then return {'notfound', fid} end
if v[2] == ARGV[2] then return {'ok', fid, v[1]} end
if ARGV[4] == 'peek' then return {'old', fid, v[1]} end
local ttl = redis.call('PTTL', fk)
if ttl < 0 then ttl = 0 end
redis.call('SET', rk, '1', 'PX', ttl + tonumber(ARGV[3]))
return {'reused', fid, v[1]}
`)

func (r *RedisState) refresh(ctx context.Context, token, mode string) (Family, string, error) {
	h := hashHex(token)
	res, err := refreshScript.Run(ctx, r.client, []string{r.key("rt", h)}, r.prefix, h, ms(r.accessTTL), mode).StringSlice()
	if err != nil || len(res) == 0 {
		return Family{}, "", fmt.Errorf("oidc state: refresh: redis: %v", cmpErr(err, "bad reply"))
	}
	var f Family
	if len(res) == 3 {
		if err := json.Unmarshal([]byte(res[2]), &f); err != nil {
			return Family{}, "", fmt.Errorf("oidc state: refresh: %w", err)
		}
	}
	return f, res[0], nil
}

func (r *RedisState) Refresh(ctx context.Context, token string) (Family, error) {
	f, status, err := r.refresh(ctx, token, "use")
	if err != nil {
		return Family{}, err
	}
	switch status {
	case "ok":
		return f, nil
	case "reused":
		return f, ErrReused
	case "revoked":
		return Family{}, ErrRevoked
	}
	return Family{}, ErrNotFound
}

func (r *RedisState) PeekRefresh(ctx context.Context, token string) (Family, bool, error) {
	f, status, err := r.refresh(ctx, token, "peek")
	if err != nil {
		return Family{}, false, err
	}
	switch status {
	case "ok":
		return f, true, nil
	case "old":
		return f, false, nil
	case "revoked":
		return Family{}, false, ErrRevoked
	}
	return Family{}, false, ErrNotFound
}

var rotateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return 'revoked' end
local cur = redis.call('HGET', KEYS[1], 'cur')
if not cur then return 'notfound' end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 'notfound' end
if cur ~= ARGV[1] then
  redis.call('SET', KEYS[2], '1', 'PX', ttl + tonumber(ARGV[4]))
  return 'reused'
end
redis.call('HSET', KEYS[1], 'cur', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ttl)
return 'ok'
`)

func (r *RedisState) Rotate(ctx context.Context, fid, old, next string) error {
	nh := hashHex(next)
	res, err := rotateScript.Run(ctx, r.client, []string{r.key("fam", fid), r.key("famrev", fid), r.key("rt", nh)},
		hashHex(old), nh, fid, ms(r.accessTTL)).Text()
	if err != nil {
		return fmt.Errorf("oidc state: rotate: redis: %w", err)
	}
	switch res {
	case "ok":
		return nil
	case "reused":
		return ErrReused
	case "revoked":
		return ErrRevoked
	}
	return ErrNotFound
}

// revokeScript marks a family revoked for ARGV[1] ms, or until its end
// plus ARGV[2] ms if that is later, never shortening a marker.
var revokeScript = redis.NewScript(`
local want = tonumber(ARGV[1])
local f = redis.call('PTTL', KEYS[2])
if f > 0 and f + tonumber(ARGV[2]) > want then want = f + tonumber(ARGV[2]) end
if want <= 0 or redis.call('PTTL', KEYS[1]) >= want then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', want)
return 1
`)

func (r *RedisState) RevokeFamily(ctx context.Context, fid string, until time.Time) error {
	err := revokeScript.Run(ctx, r.client, []string{r.key("famrev", fid), r.key("fam", fid)},
		ms(until.Sub(r.now())), ms(r.accessTTL)).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("oidc state: revoke family: redis: %w", err)
	}
	return nil
}

func (r *RedisState) RevokeAccessToken(ctx context.Context, jti string, exp time.Time) error {
	d := exp.Sub(r.now())
	if d <= 0 {
		return nil // expired: nothing left to revoke
	}
	if err := r.client.Set(ctx, r.key("jti", jti), "1", d).Err(); err != nil {
		return fmt.Errorf("oidc state: revoke access token: redis: %w", err)
	}
	return nil
}

func (r *RedisState) AccessTokenRevoked(ctx context.Context, jti, fid string) (bool, error) {
	keys := []string{r.key("jti", jti)}
	if fid != "" {
		keys = append(keys, r.key("famrev", fid))
	}
	n, err := r.client.Exists(ctx, keys...).Result()
	if err != nil {
		return false, fmt.Errorf("oidc state: access token revoked: redis: %w", err)
	}
	return n > 0, nil
}

var bindScript = redis.NewScript(`
redis.call('HSET', KEYS[1], 'c:' .. ARGV[1], '1')
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'f:' .. ARGV[2], '1') end
local want = tonumber(ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < want then redis.call('PEXPIRE', KEYS[1], want) end
return 1
`)

func (r *RedisState) BindSession(ctx context.Context, sid, client, fid string, until time.Time) error {
	err := bindScript.Run(ctx, r.client, []string{r.key("sid", hashHex(sid))}, client, fid, ms(until.Sub(r.now()))).Err()
	if err != nil {
		return fmt.Errorf("oidc state: bind session: redis: %w", err)
	}
	return nil
}

var endSessionScript = redis.NewScript(`
local fields = redis.call('HKEYS', KEYS[1])
redis.call('DEL', KEYS[1])
local clients = {}
local grace = tonumber(ARGV[2])
for _, k in ipairs(fields) do
  local kind, id = string.sub(k, 1, 2), string.sub(k, 3)
  if kind == 'c:' then
    table.insert(clients, id)
  elseif kind == 'f:' then
    local rk = ARGV[1] .. 'famrev:' .. id
    local want = grace
    local f = redis.call('PTTL', ARGV[1] .. 'fam:' .. id)
    if f > 0 then want = f + grace end
    if redis.call('PTTL', rk) < want then redis.call('SET', rk, '1', 'PX', want) end
  end
end
return clients
`)

func (r *RedisState) EndSession(ctx context.Context, sid string) ([]string, error) {
	res, err := endSessionScript.Run(ctx, r.client, []string{r.key("sid", hashHex(sid))}, r.prefix, ms(r.accessTTL)).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("oidc state: end session: redis: %w", err)
	}
	slices.Sort(res)
	return res, nil
}
