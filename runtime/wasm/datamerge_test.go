package wasm

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// TestMergeDataSameMemory: a Go program's module, its data segments
// merged, has far fewer of them, and the memory of an instance of it is
// the same byte for byte as of the module as built (the oracle: wazero
// instantiating the original).
func TestMergeDataSameMemory(t *testing.T) {
	for _, path := range []string{guestPath, serverPath} {
		bin, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		merged := mergeData(bin)
		before, after := countSegments(t, bin), countSegments(t, merged)
		if after >= before || after > 100 {
			t.Errorf("%s: %d data segments merged into %d, want far fewer", path, before, after)
		}
		t.Logf("%s: %d data segments merged into %d", path, before, after)
		if !bytes.Equal(instanceMemory(t, bin), instanceMemory(t, merged)) {
			t.Errorf("%s: the memory of an instance differs once its data segments are merged", path)
		}
	}
}

// TestMergeDataLeavesAlone: modules whose segments cannot be proven the
// same once merged, and binaries that are not modules at all, come back
// unchanged, and nothing read past an end panics.
func TestMergeDataLeavesAlone(t *testing.T) {
	seg := func(offset int32, b ...byte) []byte {
		out := []byte{0, opI32Const}
		out = appendSLEB(out, int64(offset))
		out = append(out, opEnd)
		out = binary.AppendUvarint(out, uint64(len(b)))
		return append(out, b...)
	}
	tests := []struct {
		name     string
		sections [][]byte // each: ID, then content
		merged   bool
	}{
		{name: "two segments a few bytes apart", sections: [][]byte{memorySection(), dataSection(seg(16, 1, 2), seg(24, 3))}, merged: true},
		{name: "apart by more than a page", sections: [][]byte{memorySection(), dataSection(seg(16, 1), seg(16+4096+2, 3))}},
		{name: "overlapping", sections: [][]byte{memorySection(), dataSection(seg(16, 1, 2, 3), seg(17, 9))}},
		{name: "one segment", sections: [][]byte{memorySection(), dataSection(seg(16, 1))}},
		{name: "a passive segment", sections: [][]byte{memorySection(), dataSection(seg(16, 1), []byte{1, 1, 7})}},
		{name: "a data count section", sections: [][]byte{memorySection(), {sectionDataCount, 2}, dataSection(seg(16, 1), seg(20, 2))}},
		{name: "offset from a global", sections: [][]byte{memorySection(), dataSection(seg(16, 1), []byte{0, 0x23, 0, opEnd, 1, 2})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := module(tt.sections...)
			got := mergeData(bin)
			if changed := !bytes.Equal(got, bin); changed != tt.merged {
				t.Fatalf("rewritten: %v, want %v", changed, tt.merged)
			}
			if tt.merged && !bytes.Equal(instanceMemory(t, bin), instanceMemory(t, got)) {
				t.Error("the memory of an instance differs once merged")
			}
		})
	}
	guest, err := os.ReadFile(guestPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{0, 63, 64, -1, -64, -65, 1 << 20, -1 << 31, 1<<31 - 1} {
		r := &reader{b: appendSLEB(nil, v)}
		if got := r.i32(); int64(got) != v || r.err != nil || r.i != len(r.b) {
			t.Errorf("%d written and read as a signed LEB128: %d (%v)", v, got, r.err)
		}
	}
	for _, bin := range [][]byte{nil, []byte("\x00asm"), []byte("not a module at all"), module(memorySection(), []byte{sectionData, 0xff, 0xff, 0xff, 0xff, 0x7f})} {
		if got := mergeData(bin); !bytes.Equal(got, bin) {
			t.Errorf("mergeData(%q) rewrote it", bin)
		}
	}
	for n := 8; n < len(guest); n += 997 {
		if got := mergeData(guest[:n]); !bytes.Equal(got, guest[:n]) {
			t.Fatalf("a module cut at %d bytes was rewritten", n)
		}
	}
}

// module is a Wasm binary of the sections given (each its ID, then its
// content), their sizes filled in.
func module(sections ...[]byte) []byte {
	out := []byte("\x00asm\x01\x00\x00\x00")
	for _, s := range sections {
		out = append(out, s[0])
		out = binary.AppendUvarint(out, uint64(len(s)-1))
		out = append(out, s[1:]...)
	}
	return out
}

// memorySection declares one memory of one page.
func memorySection() []byte { return []byte{5, 1, 0, 1} }

func dataSection(segs ...[]byte) []byte {
	out := binary.AppendUvarint([]byte{sectionData}, uint64(len(segs)))
	for _, s := range segs {
		out = append(out, s...)
	}
	return out
}

// countSegments is the number of data segments of bin.
func countSegments(t *testing.T, bin []byte) int {
	t.Helper()
	r := &reader{b: bin, i: 8}
	for r.i < len(r.b) && r.err == nil {
		id, size := r.byte(), r.u32()
		if id == sectionData {
			return int((&reader{b: bin[r.i:]}).u32())
		}
		r.i += int(size)
	}
	t.Fatalf("no data section (%v)", r.err)
	return 0
}

// instanceMemory instantiates bin without running it and returns its
// memory.
func instanceMemory(t *testing.T, bin []byte) []byte {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	mod, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithStartFunctions())
	if err != nil {
		t.Fatal(err)
	}
	mem, ok := mod.Memory().Read(0, mod.Memory().Size())
	if !ok {
		t.Fatal("read memory")
	}
	return bytes.Clone(mem)
}

// BenchmarkInstantiateGuest instantiates the Go test guest (compiled
// once) without running it, as built and with its data segments merged.
func BenchmarkInstantiateGuest(b *testing.B) {
	bin, err := os.ReadFile(guestPath)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		bin  []byte
	}{{"as built", bin}, {"merged", mergeData(bin)}} {
		b.Run(bc.name, func(b *testing.B) {
			cache, err := wazero.NewCompilationCacheWithDir(cacheDir)
			if err != nil {
				b.Fatal(err)
			}
			rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cache))
			defer rt.Close(ctx)
			wasi_snapshot_preview1.MustInstantiate(ctx, rt)
			mod, err := rt.CompileModule(ctx, bc.bin)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				inst, err := rt.InstantiateModule(ctx, mod, wazero.NewModuleConfig().WithStartFunctions().WithName(""))
				if err != nil {
					b.Fatal(err)
				}
				inst.Close(ctx)
			}
		})
	}
}
