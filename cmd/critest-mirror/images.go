package main

// image is one name critest pulls. Images of one group are one image (one
// image ID); every group is an image of its own.
type image struct {
	ref   string  // as critest writes it
	group string  // defaults to ref
	from  string  // where in cri-tools v1.37.0 (pkg/validate, pkg/framework, images/)
	oci   ociSpec // its OCI stand-in
}

const (
	staging = "gcr.io/k8s-staging-cri-tools/"
	e2e     = "registry.k8s.io/e2e-test-images/"
)

// images is every image critest v1.37.0 pulls on linux/amd64.
//
// Not served: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2…
// (testLinuxImageWithDigest): a pull by a fixed digest names bytes a
// stand-in cannot have, so "public image with digest should be pulled and
// removed" fails here by design.
var images = []image{
	{ref: e2e + "busybox:1.29-2", from: "framework/util.go DefaultLinuxContainerImage"},
	{ref: e2e + "nginx:1.14-2", from: "validate/consts.go webServerLinuxImage, security_context_linux.go nginxContainerImage",
		oci: ociSpec{kind: nginx, port: 80}},
	{ref: e2e + "httpd:2.4.39-4", from: "validate/multi_container_linux.go httpdImage",
		oci: ociSpec{kind: httpd, port: 80}},
	{ref: e2e + "nonewprivs:1.3", from: "validate/security_context_linux.go noNewPrivsImage",
		oci: ociSpec{kind: nonewprivs}},
	{ref: staging + "hostnet-nginx-amd64:latest", from: "validate/consts_linux.go hostNetWebServerImage, images/hostnet-nginx",
		oci: ociSpec{kind: nginx, port: 12003}},
	{ref: staging + "test-image-latest:latest", from: "validate/consts.go testLinuxImageWithoutTag, images/image-test",
		oci: ociSpec{marker: "test-image-latest"}},
	{ref: staging + "test-image-tag:test", from: "validate/consts.go testLinuxImageWithTag, images/image-test",
		oci: ociSpec{marker: "test"}},
	{ref: staging + "test-image-tag:all", from: "validate/consts.go testLinuxImageWithAllReferences, images/image-test",
		oci: ociSpec{marker: "all"}},
	{ref: staging + "test-image-user-uid:latest", from: "validate/consts.go testImageUserUID, images/image-user",
		oci: ociSpec{user: "1002"}},
	{ref: staging + "test-image-user-username:latest", from: "validate/consts.go testImageUserUsername, images/image-user",
		oci: ociSpec{user: "www-data"}},
	{ref: staging + "test-image-user-uid-group:latest", from: "validate/consts.go testImageUserUIDGroup, images/image-user",
		oci: ociSpec{user: "1003:1004"}},
	{ref: staging + "test-image-user-username-group:latest", from: "validate/consts.go testImageUserUsernameGroup, images/image-user",
		oci: ociSpec{user: "www-data:1004"}},
	{ref: staging + "test-image-predefined-group:latest", from: "validate/consts.go testImagePreDefinedGroup, images/image-predefined-group",
		oci: ociSpec{kind: predefinedGroup, user: "1000"}},
	{ref: staging + "test-image-1:latest", from: "validate/consts.go testLinuxDifferentTagDifferentImageList",
		oci: ociSpec{marker: "test-image-1"}},
	{ref: staging + "test-image-2:latest", from: "validate/consts.go testLinuxDifferentTagDifferentImageList",
		oci: ociSpec{marker: "test-image-2"}},
	{ref: staging + "test-image-3:latest", from: "validate/consts.go testLinuxDifferentTagDifferentImageList",
		oci: ociSpec{marker: "test-image-3"}},
	{ref: staging + "test-image-tags:1", group: "test-image-tags", from: "validate/consts.go testLinuxDifferentTagSameImageList",
		oci: ociSpec{marker: "same-image"}},
	{ref: staging + "test-image-tags:2", group: "test-image-tags", from: "validate/consts.go testLinuxDifferentTagSameImageList",
		oci: ociSpec{marker: "same-image"}},
	{ref: staging + "test-image-tags:3", group: "test-image-tags", from: "validate/consts.go testLinuxDifferentTagSameImageList",
		oci: ociSpec{marker: "same-image"}},
	{ref: "registry.k8s.io/pause:3.9", group: "pause", from: "validate/consts.go testSameImageDifferentRegistries",
		oci: ociSpec{kind: pause, user: "65535:65535"}},
	{ref: "k8s.gcr.io/pause:3.9", group: "pause", from: "validate/consts.go testSameImageDifferentRegistries",
		oci: ociSpec{kind: pause, user: "65535:65535"}},
}
