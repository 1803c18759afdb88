package oci

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// maxIDFile bounds what is read of a container's /etc/passwd or /etc/group.
const maxIDFile = 4 << 20

// parseUser splits the image config's user ("uid", "uid:gid", "name",
// "name:group") into its parts.
func parseUser(u string) (user, group string, err error) {
	user, group, hasGroup := strings.Cut(u, ":")
	if (u != "" && user == "") || (hasGroup && group == "") || strings.ContainsAny(u, "\n\x00") || strings.Count(u, ":") > 1 {
		return "", "", invalid("user %q: want uid, uid:gid, name or name:group", u)
	}
	return user, group, nil
}

// resolveUser turns spec's user into ids, looking names up in the
// rootfs's /etc/passwd and /etc/group (read within rootfs: symlinks that
// point out of it resolve inside it), and adds extra and the groups that
// list the user as a member to the additional groups.
func resolveUser(rootfs, u string, extra []uint32) (specs.User, error) {
	name, group, err := parseUser(u)
	if err != nil {
		return specs.User{}, err
	}
	var out specs.User
	var userName string
	if name != "" {
		if uid, err := strconv.ParseUint(name, 10, 32); err == nil {
			out.UID = uint32(uid)
			// A uid with a passwd entry takes its group from it.
			if e, ok, err := lookupPasswd(rootfs, func(e passwdEntry) bool { return e.uid == out.UID }); err != nil {
				return specs.User{}, err
			} else if ok {
				out.GID, userName = e.gid, e.name
			}
		} else {
			e, ok, err := lookupPasswd(rootfs, func(e passwdEntry) bool { return e.name == name })
			if err != nil {
				return specs.User{}, err
			}
			if !ok {
				return specs.User{}, invalid("user %q: no user %q in the image's /etc/passwd", u, name)
			}
			out.UID, out.GID, userName = e.uid, e.gid, e.name
		}
	}
	if group != "" {
		if gid, err := strconv.ParseUint(group, 10, 32); err == nil {
			out.GID = uint32(gid)
		} else {
			e, ok, err := lookupGroup(rootfs, func(e groupEntry) bool { return e.name == group })
			if err != nil {
				return specs.User{}, err
			}
			if !ok {
				return specs.User{}, invalid("user %q: no group %q in the image's /etc/group", u, group)
			}
			out.GID = e.gid
		}
	}
	if userName != "" {
		err := eachGroup(rootfs, func(e groupEntry) {
			if slices.Contains(e.members, userName) && e.gid != out.GID {
				out.AdditionalGids = append(out.AdditionalGids, e.gid)
			}
		})
		if err != nil {
			return specs.User{}, err
		}
	}
	for _, g := range extra {
		if !slices.Contains(out.AdditionalGids, g) {
			out.AdditionalGids = append(out.AdditionalGids, g)
		}
	}
	return out, nil
}

type passwdEntry struct {
	name     string
	uid, gid uint32
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

func lookupPasswd(rootfs string, match func(passwdEntry) bool) (passwdEntry, bool, error) {
	var found passwdEntry
	ok := false
	err := eachLine(rootfs, "etc/passwd", func(f []string) {
		if ok || len(f) < 4 {
			return
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return
		}
		e := passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid)}
		if match(e) {
			found, ok = e, true
		}
	})
	return found, ok, err
}

func lookupGroup(rootfs string, match func(groupEntry) bool) (groupEntry, bool, error) {
	var found groupEntry
	ok := false
	err := eachGroup(rootfs, func(e groupEntry) {
		if !ok && match(e) {
			found, ok = e, true
		}
	})
	return found, ok, err
}

func eachGroup(rootfs string, fn func(groupEntry)) error {
	return eachLine(rootfs, "etc/group", func(f []string) {
		if len(f) < 3 {
			return
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return
		}
		e := groupEntry{name: f[0], gid: uint32(gid)}
		if len(f) > 3 && f[3] != "" {
			e.members = strings.Split(f[3], ",")
		}
		fn(e)
	})
}

// eachLine calls fn with the ':'-separated fields of each line of file
// (relative to rootfs, resolved inside it); a missing file has no lines.
func eachLine(rootfs, file string, fn func([]string)) error {
	f, err := openInRoot(rootfs, file)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the image's /%s: %w", file, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxIDFile))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fn(strings.Split(line, ":"))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read the image's /%s: %w", file, err)
	}
	return nil
}

// openInRoot opens name as if rootfs were /: no path, symlink or ".."
// leads out of it.
func openInRoot(rootfs, name string) (*os.File, error) {
	dir, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = fmt.Errorf("not a regular file")
		}
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}
