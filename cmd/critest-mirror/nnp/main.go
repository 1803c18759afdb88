// Command nnp is the program of critest-mirror's nonewprivs stand-in, as
// Kubernetes' e2e nonewprivs image has it: installed setuid root, it
// prints the effective user ID it runs with, so a test sees whether
// no_new_privs kept the setuid bit from raising it.
//
// Build it with CGO_ENABLED=0: the image has no C library for it.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
