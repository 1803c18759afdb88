// Package cri is the node's Container Runtime Interface server: the CRI v1
// RuntimeService and ImageService over gRPC on a unix socket, so that the
// skiff agent, or a person with crictl, drives pods on this node exactly as
// a kubelet drives containerd.
//
// It owns the node-local state of pod sandboxes and containers: records in
// bbolt (<RootDir>/cri.db) that survive a restart, and the live containers
// in memory. It delegates the rest: running code to the runtime of each
// sandbox's handler (Config.Runtimes, speaking the runtime-neutral types of
// package runtime; the node assembly gives it runtime/wasm as "wasm", the
// default), network namespaces to netns, images to runtime/image. It knows
// nothing of a control plane, nor of how a runtime runs its containers.
//
// # Behaviour
//
//   - Sandbox and container IDs are 64 hex digits. Every call that takes an
//     ID also accepts a unique prefix of one.
//   - RunPodSandbox makes a pinned network namespace with loopback up
//     (<StateDir>/netns/<id>), taken from four made ahead under
//     <StateDir>/netns/.spare (netns.Pool); it needs root. A pod that asks for the node's
//     network namespace (NamespaceOption network NODE) gets none.
//     Config.Network then attaches the namespace to the pod network and
//     gives the pod its IPs (PodSandboxStatus network.ip, additional_ips):
//     netns.CNI through CNI plugins, netns.Loopback (the default) not at
//     all. While the network is not ready (CNI without a pod CIDR from
//     UpdateRuntimeConfig and without a conflist of the user's: Status
//     says NetworkReady false), RunPodSandbox fails with
//     FailedPrecondition "pod network not ready: <reason>".
//     StopPodSandbox stops the pod's containers, tears its network down
//     (CNI DEL) and deletes its namespace; RemovePodSandbox tears it down
//     again, which is harmless.
//   - Stop* and Remove* of an unknown ID succeed, as the CRI spec requires
//     (containerd answered NotFound to a Stop once and has since been fixed
//     to follow the spec). Stop and Remove are idempotent, and Remove stops
//     what is still running first.
//   - StopContainer honours its timeout as SIGTERM then SIGKILL would: a
//     Wasm module's stdin reaches end of file (its "SIGTERM"), and the
//     module is killed if it still runs when the timeout ends (exit code
//     137, reason "Error"); a timeout of 0 kills at once (message
//     "stopped"). StopPodSandbox and RemoveContainer kill at once.
//   - Logs go to <sandbox log_directory>/<container log_path> in the CRI log
//     format; with either unset the output is discarded.
//   - PullImage pulls from OCI registries into the node's image store
//     (runtime/image); a name without a registry host that the store
//     already holds is answered from the store.
//   - A container that declares TCP ports (the kubelet's annotation
//     io.kubernetes.container.ports, ports.go) gets a listening socket for
//     each in its sandbox's network namespace while it runs.
//   - After a restart, containers that were running are reported exited
//     with exit code 255, reason "Unknown", message "runtime restarted";
//     created containers can still be started; sandboxes whose namespace is
//     gone are NotReady.
//
// Concurrency: every call may come from any goroutine. The maps of sandboxes
// and containers are guarded by one mutex, each record by its object's
// mutex (lock order: maps, then sandbox, then container). No lock is held
// while guest code runs or while a module compiles.
package cri
