package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A sandbox's host ports (CRI port_mappings with a host_port, a pod's
// hostPort) are served by the CRI server itself until pod networking
// brings CNI's portmap: it listens on host_ip:host_port in the node's
// network namespace and relays each connection to 127.0.0.1:container_port
// in the sandbox's, as Docker's userland proxy does. TCP only; a mapping
// without a host port needs nothing (the pod's own address serves it).

// Bounds of the relays of one host port.
const (
	hostPortConns       = 256              // connections relayed at once
	hostPortDialTimeout = 5 * time.Second  // to reach the container's port
	hostPortIdle        = 10 * time.Minute // a connection with no traffic either way
)

// portMapping is the persistent form of one host port of a sandbox.
type portMapping struct {
	HostIP        string `json:"hostIP,omitempty"` // empty: every address
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
}

// hostPorts parses a sandbox config's port mappings, naming the field of
// the one that is wrong. Mappings without a host port are dropped; a pod
// on the node's network needs none (its containers listen there).
func hostPorts(cfg *runtime.PodSandboxConfig, hostNetwork bool) ([]portMapping, error) {
	var out []portMapping
	seen := map[string]bool{}
	for i, pm := range cfg.GetPortMappings() {
		field := fmt.Sprintf("config.port_mappings[%d]", i)
		if pm.GetHostPort() == 0 || hostNetwork {
			continue
		}
		if pm.GetProtocol() != runtime.Protocol_TCP {
			return nil, unsupported(field+".protocol", fmt.Sprintf("%v host ports are not supported yet (TCP only)", pm.GetProtocol()))
		}
		if pm.GetHostPort() < 1 || pm.GetHostPort() > 65535 {
			return nil, fmt.Errorf("%w: %s.host_port: %d is not a port", errInvalidArgument, field, pm.GetHostPort())
		}
		if pm.GetContainerPort() < 1 || pm.GetContainerPort() > 65535 {
			return nil, fmt.Errorf("%w: %s.container_port: %d is not a port", errInvalidArgument, field, pm.GetContainerPort())
		}
		if ip := pm.GetHostIp(); ip != "" {
			if _, err := netip.ParseAddr(ip); err != nil {
				return nil, fmt.Errorf("%w: %s.host_ip: %q is not an IP address", errInvalidArgument, field, ip)
			}
		}
		key := pm.GetHostIp() + "/" + strconv.Itoa(int(pm.GetHostPort()))
		if seen[key] {
			return nil, fmt.Errorf("%w: %s.host_port: %d is mapped twice", errInvalidArgument, field, pm.GetHostPort())
		}
		seen[key] = true
		out = append(out, portMapping{HostIP: pm.GetHostIp(), HostPort: int(pm.GetHostPort()), ContainerPort: int(pm.GetContainerPort())})
	}
	return out, nil
}

// hostPortProxy relays a sandbox's host ports until it is closed.
type hostPortProxy struct {
	lns    []net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// serveHostPorts listens on every host port of a sandbox and relays them
// into netnsPath; on error nothing is left listening.
func serveHostPorts(maps []portMapping, netnsPath string, dial podDialer) (*hostPortProxy, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &hostPortProxy{cancel: cancel}
	for _, m := range maps {
		ln, err := net.Listen("tcp", net.JoinHostPort(m.HostIP, strconv.Itoa(m.HostPort)))
		if err != nil {
			p.close()
			return nil, fmt.Errorf("host port %d: %w", m.HostPort, err)
		}
		p.lns = append(p.lns, ln)
		p.wg.Add(1)
		go p.serve(ctx, ln, netnsPath, m.ContainerPort, dial)
	}
	return p, nil
}

func (p *hostPortProxy) serve(ctx context.Context, ln net.Listener, netnsPath string, port int, dial podDialer) {
	defer p.wg.Done()
	seats := make(chan struct{}, hostPortConns)
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed
		}
		select {
		case seats <- struct{}{}:
		default:
			c.Close() // full: refused rather than queued
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-seats }()
			relayHostPort(ctx, c, netnsPath, port, dial)
		}()
	}
}

// relayHostPort copies between a client and the container's port until
// either closes, the connection idles past hostPortIdle, or ctx ends.
func relayHostPort(ctx context.Context, c net.Conn, netnsPath string, port int, dial podDialer) {
	defer c.Close()
	dctx, cancel := context.WithTimeout(ctx, hostPortDialTimeout)
	up, err := dial(dctx, netnsPath, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	cancel()
	if err != nil {
		return
	}
	defer up.Close()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	idle := time.AfterFunc(hostPortIdle, stop)
	defer idle.Stop()
	go func() {
		<-ctx.Done()
		c.Close()
		up.Close()
	}()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				idle.Reset(hostPortIdle)
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				if tc, ok := dst.(interface{ CloseWrite() error }); ok && errors.Is(err, io.EOF) {
					tc.CloseWrite() // half-close: the other way may still talk
				} else {
					stop()
				}
				break
			}
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// setHostPorts records the relays of sandbox id (nil: none) and returns
// the ones it replaces, for the caller to close.
func (s *service) setHostPorts(id string, p *hostPortProxy) *hostPortProxy {
	s.hostPortsMu.Lock()
	defer s.hostPortsMu.Unlock()
	old := s.hostPorts[id]
	if p == nil {
		delete(s.hostPorts, id)
	} else {
		s.hostPorts[id] = p
	}
	return old
}

// closeHostPorts ends every sandbox's relays (the server closes).
func (s *service) closeHostPorts() {
	s.hostPortsMu.Lock()
	all := s.hostPorts
	s.hostPorts = map[string]*hostPortProxy{}
	s.hostPortsMu.Unlock()
	for _, p := range all {
		p.close()
	}
}

// close stops listening and ends every relay.
func (p *hostPortProxy) close() {
	if p == nil {
		return
	}
	for _, ln := range p.lns {
		ln.Close()
	}
	p.cancel()
	p.wg.Wait()
}
