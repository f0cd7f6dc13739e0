package sqltx

import "testing"

func TestBackoffBounds(t *testing.T) {
	tests := []struct {
		attempt int
		want    int64 // the nominal wait; backoff draws from [want/2, want)
	}{
		{1, int64(backoffBase)},
		{2, int64(2 * backoffBase)},
		{5, int64(16 * backoffBase)},
		{8, int64(backoffMax)},
		{40, int64(backoffMax)},
		{1000, int64(backoffMax)},
	}
	for _, tt := range tests {
		for range 200 {
			got := int64(backoff(tt.attempt))
			if got < tt.want/2 || got >= tt.want {
				t.Fatalf("backoff(%d) = %d, want in [%d, %d)", tt.attempt, got, tt.want/2, tt.want)
			}
		}
	}
}
