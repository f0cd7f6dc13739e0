package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Remembered devices in Redis:
//
//	<prefix>device:<handle>   {"uid","iat","exp"}       TTL: the device's end
//	<prefix>udev:<user id>    sorted set of handles, scored by their end
//
// The device id itself is never stored, only its hash (the handle).

type deviceRecord struct {
	UserID    string    `json:"uid"`
	CreatedAt time.Time `json:"iat"`
	ExpiresAt time.Time `json:"exp"`
}

func (r *Redis) deviceKey(handle string) string { return r.prefix + "device:" + handle }
func (r *Redis) userDevicesKey(userID string) string {
	return r.prefix + "udev:" + userID
}

// PutDevice remembers d until its ExpiresAt.
func (r *Redis) PutDevice(ctx context.Context, d Device) error {
	now := r.now()
	if err := checkDevice(d, now); err != nil {
		return err
	}
	ttl := d.ExpiresAt.Sub(now)
	if ttl < time.Millisecond {
		return ErrExpired
	}
	v, err := json.Marshal(deviceRecord{UserID: d.UserID, CreatedAt: d.CreatedAt, ExpiresAt: d.ExpiresAt})
	if err != nil {
		return fmt.Errorf("session: put device: %w", err)
	}
	h := DeviceHandle(d.ID)
	uk := r.userDevicesKey(d.UserID)
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.deviceKey(h), v, ttl)
		p.ZAdd(ctx, uk, redis.Z{Score: float64(d.ExpiresAt.Unix()), Member: h})
		p.ZRemRangeByScore(ctx, uk, "-inf", "("+strconv.FormatInt(now.Unix(), 10))
		p.ExpireGT(ctx, uk, ttl+time.Second)
		p.ExpireNX(ctx, uk, ttl+time.Second)
		return nil
	})
	if err != nil {
		return fmt.Errorf("session: put device: redis: %w", err)
	}
	return nil
}

func (r *Redis) getDevice(ctx context.Context, handle string) (Device, error) {
	v, err := r.client.Get(ctx, r.deviceKey(handle)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Device{}, ErrNotFound
	}
	if err != nil {
		return Device{}, fmt.Errorf("session: device: redis: %w", err)
	}
	var rec deviceRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return Device{}, fmt.Errorf("session: device: decode: %w", err)
	}
	if !r.now().Before(rec.ExpiresAt) {
		return Device{}, ErrNotFound
	}
	return Device{Handle: handle, UserID: rec.UserID, CreatedAt: rec.CreatedAt, ExpiresAt: rec.ExpiresAt}, nil
}

// Device returns the remembered device of an id, or ErrNotFound.
func (r *Redis) Device(ctx context.Context, id string) (Device, error) {
	return r.getDevice(ctx, DeviceHandle(id))
}

// UserDevices returns the live devices of a user, oldest first.
func (r *Redis) UserDevices(ctx context.Context, userID string) ([]Device, error) {
	hs, err := r.client.ZRangeArgs(ctx, redis.ZRangeArgs{Key: r.userDevicesKey(userID), ByScore: true, Start: strconv.FormatInt(r.now().Unix(), 10), Stop: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("session: user devices: redis: %w", err)
	}
	var out []Device
	for _, h := range hs {
		d, err := r.getDevice(ctx, h)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if d.UserID == userID {
			out = append(out, d)
		}
	}
	sortDevices(out)
	return out, nil
}

// DeleteDevice forgets a device of a user.
func (r *Redis) DeleteDevice(ctx context.Context, userID, handle string) error {
	d, err := r.getDevice(ctx, handle)
	if errors.Is(err, ErrNotFound) {
		return r.client.ZRem(ctx, r.userDevicesKey(userID), handle).Err()
	}
	if err != nil {
		return err
	}
	if d.UserID != userID {
		return nil
	}
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.deviceKey(handle))
		p.ZRem(ctx, r.userDevicesKey(userID), handle)
		return nil
	})
	if err != nil {
		return fmt.Errorf("session: delete device: redis: %w", err)
	}
	return nil
}

// DeleteUserDevices forgets every device of a user.
func (r *Redis) DeleteUserDevices(ctx context.Context, userID string) (int, error) {
	uk := r.userDevicesKey(userID)
	hs, err := r.client.ZRange(ctx, uk, 0, -1).Result()
	if err != nil {
		return 0, fmt.Errorf("session: delete devices: redis: %w", err)
	}
	if len(hs) == 0 {
		return 0, nil
	}
	keys := make([]string, 0, len(hs)+1)
	for _, h := range hs {
		keys = append(keys, r.deviceKey(h))
	}
	n, err := r.client.Del(ctx, keys...).Result()
	if err != nil {
		return 0, fmt.Errorf("session: delete devices: redis: %w", err)
	}
	if err := r.client.ZRem(ctx, uk, toAny(hs)...).Err(); err != nil {
		return int(n), fmt.Errorf("session: delete devices: redis: %w", err)
	}
	return int(n), nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
