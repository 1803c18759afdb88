package cri

import (
	"context"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageFsInfo reports the disk usage of the node's image store.
func (s *service) ImageFsInfo(ctx context.Context, req *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	u, err := s.images.Usage()
	if err != nil {
		return nil, fmt.Errorf("image fs info: %w", err)
	}
	return &runtime.ImageFsInfoResponse{ImageFilesystems: []*runtime.FilesystemUsage{{
		Timestamp:  s.now().UnixNano(),
		FsId:       &runtime.FilesystemIdentifier{Mountpoint: u.Dir},
		UsedBytes:  &runtime.UInt64Value{Value: u.UsedBytes},
		InodesUsed: &runtime.UInt64Value{Value: u.Inodes},
	}}}, nil
}
