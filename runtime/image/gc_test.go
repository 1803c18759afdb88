package image

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"
)

func TestGC(t *testing.T) {
	s, err := OpenConfig(t.TempDir(), Config{GC: GCPolicy{HighThresholdPercent: 80, LowThresholdPercent: 50, MinAge: Duration{time.Nanosecond}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Three images of 100 bytes, pulled in this order: old, mid, new.
	var ids []string
	for i, n := range []string{"old", "mid", "new"} {
		img := mustImport(t, s, n, wasmWith(string(make([]byte, 89))+n))
		when := time.Now().Add(time.Duration(i-10) * time.Hour)
		os.Chtimes(s.BlobPath(img), when, when)
		ids = append(ids, img.ID)
	}
	disk := DiskStats{Capacity: 1000, Available: 300} // 70 % used
	s.statfs = func(string) (DiskStats, error) { return disk, nil }

	res, err := s.GC(ctx, nil)
	if err != nil || len(res.Removed) != 0 || res.UsagePercent != 70 {
		t.Fatalf("GC under the high threshold = %+v, %v; want nothing removed", res, err)
	}

	// 85 % used: free 350 bytes to reach 50 %, more than all there is; "old"
	// is in use and stays.
	disk.Available = 150
	res, err = s.GC(ctx, map[string]bool{ids[0]: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Removed, []string{ids[1], ids[2]}) || res.Freed != 200 {
		t.Errorf("GC removed %v (%d bytes), want mid then new", res.Removed, res.Freed)
	}
	if _, err := s.Get("old"); err != nil {
		t.Errorf("the image in use was removed: %v", err)
	}
	for _, n := range []string{"mid", "new"} {
		if _, err := s.Get(n); err == nil {
			t.Errorf("%s is still there", n)
		}
	}
}

func TestGCOldestFirstAndMinAge(t *testing.T) {
	s, err := OpenConfig(t.TempDir(), Config{GC: GCPolicy{HighThresholdPercent: 80, LowThresholdPercent: 79, MinAge: Duration{time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	old := mustImport(t, s, "old", wasmWith("old"))
	older := mustImport(t, s, "older", wasmWith("older"))
	fresh := mustImport(t, s, "fresh", wasmWith("fresh"))
	for img, age := range map[string]time.Duration{old.ID: 2 * time.Hour, older.ID: 3 * time.Hour} {
		when := time.Now().Add(-age)
		os.Chtimes(s.blobPath(img), when, when)
	}
	s.statfs = func(string) (DiskStats, error) { return DiskStats{Capacity: 1000, Available: 200}, nil } // free 10 bytes
	res, err := s.GC(context.Background(), nil)
	if err != nil || !slices.Equal(res.Removed, []string{older.ID}) {
		t.Errorf("GC = %+v, %v; want only the oldest removed", res, err)
	}
	if _, err := s.Get("fresh"); err != nil {
		t.Errorf("an image younger than minAge was removed: %v (%s)", err, fresh.ID)
	}
}

// TestGCLeastRecentlyUsed: an image used after it was pulled goes after
// one pulled later but never used since.
func TestGCLeastRecentlyUsed(t *testing.T) {
	s, err := OpenConfig(t.TempDir(), Config{GC: GCPolicy{HighThresholdPercent: 80, LowThresholdPercent: 79, MinAge: Duration{time.Nanosecond}}})
	if err != nil {
		t.Fatal(err)
	}
	first := mustImport(t, s, "first", wasmWith("first"))
	second := mustImport(t, s, "second", wasmWith("second"))
	for img, age := range map[string]time.Duration{first.ID: 3 * time.Hour, second.ID: 2 * time.Hour} {
		when := time.Now().Add(-age)
		os.Chtimes(s.blobPath(img), when, when)
	}
	if err := s.Touch(first.ID); err != nil {
		t.Fatal(err)
	}
	s.statfs = func(string) (DiskStats, error) { return DiskStats{Capacity: 1000, Available: 200}, nil } // free 10 bytes
	res, err := s.GC(context.Background(), nil)
	if err != nil || !slices.Equal(res.Removed, []string{second.ID}) {
		t.Errorf("GC = %+v, %v; want the image unused for longest (second) removed", res, err)
	}
	if err := s.Touch("sha256:missing"); err == nil {
		t.Error("Touch of a missing image succeeded")
	}
}
