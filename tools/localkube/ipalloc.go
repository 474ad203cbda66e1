package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// ipAllocator hands out loopback addresses to pods: 127.0.0.2 … 127.0.0.254, then 127.0.1.1 …
// 127.0.1.254 and so on (last octet 1–254, never 127.0.0.1). Like the host-local CNI plugin it
// continues after the last address it gave out rather than reusing the lowest free one, so a
// freshly freed address (and a BEAM node name built from it) is not handed out again at once.
type ipAllocator struct {
	mu   sync.Mutex
	used map[uint32]bool
	last uint32 // last allocated (offset within 127.0.0.0/8)
}

const (
	ipFirst uint32 = 2         // 127.0.0.2
	ipLast  uint32 = 0xfffffe  // 127.255.255.254
	ipBase  uint32 = 127 << 24 // 127.0.0.0
)

var errNoAddresses = errors.New("no free loopback addresses left")

func newIPAllocator() *ipAllocator {
	return &ipAllocator{used: map[uint32]bool{}, last: ipFirst - 1}
}

func usableOffset(off uint32) bool {
	last := off & 0xff
	return off >= ipFirst && off <= ipLast && last != 0 && last != 255
}

func (a *ipAllocator) allocate() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	off := a.last
	for range ipLast {
		off++
		if off > ipLast {
			off = ipFirst
		}
		if usableOffset(off) && !a.used[off] {
			a.used[off] = true
			a.last = off
			return offsetToIP(off), nil
		}
	}
	return "", errNoAddresses
}

func (a *ipAllocator) release(ip string) {
	off, err := ipToOffset(ip)
	if err != nil {
		return
	}
	a.mu.Lock()
	delete(a.used, off)
	a.mu.Unlock()
}

func (a *ipAllocator) inUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.used)
}

func offsetToIP(off uint32) string {
	v := ipBase | off
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).String()
}

func ipToOffset(ip string) (uint32, error) {
	p := net.ParseIP(ip).To4()
	if p == nil || p[0] != 127 {
		return 0, fmt.Errorf("not a 127/8 address: %q", ip)
	}
	return uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3]), nil
}
