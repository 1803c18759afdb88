package apiserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// TestSnapshotStream: ClusterService.Snapshot sends the store's database in
// chunks of at most 1 MiB, then a summary whose size and SHA-256 are those
// of the data sent and whose revision is the store's.
func TestSnapshotStream(t *testing.T) {
	a := newAPI(t)
	for i := range 8 { // about 2 MiB of objects: several chunks
		p := pod(fmt.Sprintf("big-%d", i))
		p.Metadata.Annotations = map[string]string{"a": strings.Repeat("x", maxAnnotationBytes-1)}
		a.create(t, p)
	}
	list, err := a.pods.List(context.Background(), connect.NewRequest(&skiffv1.ListRequest{Namespace: "default"}))
	if err != nil {
		t.Fatal(err)
	}

	c := skiffv1connect.NewClusterServiceClient(a.hc, a.url)
	stream, err := c.Snapshot(context.Background(), connect.NewRequest(&skiffv1.SnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var (
		data    bytes.Buffer
		chunks  int
		summary *skiffv1.SnapshotSummary
	)
	for stream.Receive() {
		m := stream.Msg()
		if summary != nil {
			t.Fatal("a message after the summary")
		}
		if len(m.Data) > snapshotChunkBytes {
			t.Errorf("chunk %d holds %d bytes, more than %d", chunks, len(m.Data), snapshotChunkBytes)
		}
		if m.Summary != nil && len(m.Data) > 0 {
			t.Errorf("the summary comes with %d bytes of data", len(m.Data))
		}
		data.Write(m.Data)
		summary = m.Summary
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if summary == nil {
		t.Fatal("no summary")
	}
	if chunks < 3 {
		t.Errorf("%d messages for %d bytes", chunks, data.Len())
	}
	sum := sha256.Sum256(data.Bytes())
	if summary.Size != uint64(data.Len()) || !bytes.Equal(summary.Sha256, sum[:]) {
		t.Errorf("summary says %d bytes, sha256 %x; received %d bytes, sha256 %x", summary.Size, summary.Sha256, data.Len(), sum)
	}
	if summary.Revision != list.Msg.ResourceVersion {
		t.Errorf("snapshot at revision %d, the store is at %d", summary.Revision, list.Msg.ResourceVersion)
	}
}

// TestSnapshotUnimplemented: a store that takes no snapshots says so.
func TestSnapshotUnimplemented(t *testing.T) {
	srv := httptest.NewServer(New(Config{Store: lossyStore{}}).Handler())
	t.Cleanup(srv.Close)
	c := skiffv1connect.NewClusterServiceClient(srv.Client(), srv.URL)
	stream, err := c.Snapshot(context.Background(), connect.NewRequest(&skiffv1.SnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	for stream.Receive() {
		t.Error("a message from a store without snapshots")
	}
	if code := connect.CodeOf(stream.Err()); code != connect.CodeUnimplemented {
		t.Errorf("Snapshot: %v, want Unimplemented", stream.Err())
	}
}
