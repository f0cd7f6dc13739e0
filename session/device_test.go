package session

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestDeviceStores runs the remembered-device conformance suite against
// both stores.
func TestDeviceStores(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		clock := newFakeClock()
		testDeviceStore(t, newMemoryStore(t, clock), clock)
	})
	t.Run("redis", func(t *testing.T) {
		clock := newFakeClock()
		testDeviceStore(t, newRedisStore(t, clock), clock)
	})
}

func testDeviceStore(t *testing.T, s DeviceStore, clock *fakeClock) {
	ctx := context.Background()
	now := clock.Now()
	id1, _ := NewID()
	id2, _ := NewID()
	id3, _ := NewID()
	if err := s.PutDevice(ctx, Device{ID: id1, UserID: "eu-west.u1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice(ctx, Device{ID: id2, UserID: "eu-west.u1", CreatedAt: now.Add(time.Second), ExpiresAt: now.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice(ctx, Device{ID: id3, UserID: "eu-west.u2", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice(ctx, Device{ID: "x", UserID: "u", ExpiresAt: now.Add(-time.Second)}); !errors.Is(err, ErrExpired) {
		t.Fatalf("put expired device: %v", err)
	}
	d, err := s.Device(ctx, id1)
	if err != nil || d.UserID != "eu-west.u1" || d.Handle != DeviceHandle(id1) || d.ID != "" || !d.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("device: %+v %v", d, err)
	}
	if _, err := s.Device(ctx, "unknown"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	ds, err := s.UserDevices(ctx, "eu-west.u1")
	if err != nil || len(ds) != 2 || ds[0].Handle != DeviceHandle(id1) || ds[1].Handle != DeviceHandle(id2) {
		t.Fatalf("user devices: %+v %v", ds, err)
	}
	// Another user's handle is not deleted.
	if err := s.DeleteDevice(ctx, "eu-west.u1", DeviceHandle(id3)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(ctx, id3); err != nil {
		t.Fatalf("another user's device deleted: %v", err)
	}
	if err := s.DeleteDevice(ctx, "eu-west.u1", DeviceHandle(id1)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(ctx, id1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted device: %v", err)
	}
	if err := s.DeleteDevice(ctx, "eu-west.u1", DeviceHandle(id1)); err != nil {
		t.Fatalf("delete twice: %v", err)
	}
	// Expiry.
	clock.Advance(90 * time.Minute)
	if _, err := s.Device(ctx, id3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired device: %v", err)
	}
	if ds, _ := s.UserDevices(ctx, "eu-west.u2"); len(ds) != 0 {
		t.Fatalf("expired device listed: %+v", ds)
	}
	if _, err := s.Device(ctx, id2); err != nil {
		t.Fatalf("live device: %v", err)
	}
	n, err := s.DeleteUserDevices(ctx, "eu-west.u1")
	if err != nil || n != 1 {
		t.Fatalf("delete user devices: %d %v", n, err)
	}
	if _, err := s.Device(ctx, id2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("device after delete all: %v", err)
	}
	if n, err := s.DeleteUserDevices(ctx, "eu-west.nobody"); err != nil || n != 0 {
		t.Fatalf("delete devices of nobody: %d %v", n, err)
	}
}

// TestSessionRememberedDevice: the flag survives both stores.
func TestSessionRememberedDevice(t *testing.T) {
	for name, s := range map[string]Store{"memory": newMemoryStore(t, newFakeClock()), "redis": newRedisStore(t, newFakeClock())} {
		id, _ := NewID()
		now := time.Now()
		if err := s.Put(context.Background(), Session{ID: id, UserID: "eu-west.u", CreatedAt: now, ExpiresAt: now.Add(time.Hour), RememberedDevice: true}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(context.Background(), id)
		if err != nil || !got.RememberedDevice {
			t.Fatalf("%s: %+v %v", name, got, err)
		}
	}
}
