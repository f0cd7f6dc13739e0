//go:build !purego

#include "textflag.h"

// func lookup(sg *segment, k0, k1 uint64) (rest, own, hi uint64, st int)
//
// Register use: DI sg, SI k0, R8 k1, R9 seq, R10 geom, CX shift (then the
// lane), R11 scratch, R12 h1 then p, R13 h2 then q, AX BX DX scratch.
TEXT ·lookup(SB), NOSPLIT, $0-56
	MOVQ	sg+0(FP), DI
	MOVQ	k0+8(FP), SI
	MOVQ	k1+16(FP), R8
	MOVQ	0(DI), R9	// seq
	MOVQ	8(DI), R10	// geom: nb<<32 | shift<<8 | noStash
	MOVQ	R10, R11
	SHRQ	$32, R11	// nb
	MOVQ	R10, CX
	SHRQ	$8, CX	// CL&63 = shift
	MOVQ	R8, AX
	MULQ	R11
	MOVQ	DX, R12	// h1 = fastrange(k1, nb)
	MOVQ	SI, AX
	SHLQ	$12, AX
	MULQ	R11
	MOVQ	DX, R13	// h2 = fastrange(lo, nb)
	MOVQ	R12, AX
	SHRQ	CX, AX
	MOVQ	24(DI)(AX*8), AX	// c1 = chunks[h1>>shift]
	MOVQ	R13, BX
	SHRQ	CX, BX
	MOVQ	24(DI)(BX*8), BX	// c2 = chunks[h2>>shift]
	// The entry is consistent only if seq did not move and was even;
	// geom 0 means too many chunks for the entry.
	MOVQ	0(DI), DX
	CMPQ	DX, R9
	JNE	slow
	TESTQ	$1, R9
	JNE	slow
	TESTQ	R10, R10
	JEQ	slow
	MOVQ	$1, R11
	SHLQ	CX, R11
	DECQ	R11	// chunk mask
	ANDQ	R11, R12
	IMUL3Q	$112, R12, R12
	ADDQ	AX, R12	// p
	ANDQ	R11, R13
	IMUL3Q	$112, R13, R13
	ADDQ	BX, R13	// q
	MOVQ	SI, AX
	ANDQ	$0x7fff, AX
	ORQ	$0x8000, AX
	MOVQ	$0x0001000100010001, R11
	IMULQ	R11, AX	// the tag in every lane
	MOVQ	0(R12), DX
	XORQ	AX, DX	// xp
	MOVQ	0(R13), BX
	XORQ	AX, BX	// xq
	// The buckets' other cache lines: words 7 and 13 lie on all of them.
	PREFETCHT0	56(R12)
	PREFETCHT0	56(R13)
	PREFETCHT0	104(R12)
	PREFETCHT0	104(R13)
	// z: the top bit of every zero lane of xp, and of xq one bit lower.
	MOVQ	DX, AX
	SUBQ	R11, AX
	NOTQ	DX
	ANDQ	DX, AX
	MOVQ	BX, DX
	SUBQ	R11, DX
	NOTQ	BX
	ANDQ	BX, DX
	MOVQ	$0x8000800080008000, BX
	ANDQ	BX, AX
	ANDQ	BX, DX
	SHRQ	$1, DX
	ORQ	DX, AX
	JEQ	miss
	BSFQ	AX, CX	// the lowest matching lane: bit 15+16s (p) or 14+16s (q)
	MOVQ	R12, DX
	MOVQ	104(R12), R11	// verHi of p
	TESTQ	$1, CX
	CMOVQEQ	R13, DX	// the slot's bucket
	CMOVQEQ	104(R13), R11	// and its verHi word
	MOVQ	CX, BX
	SHRQ	$4, BX
	LEAQ	(BX)(BX*2), BX	// 3s
	MOVQ	8(DX)(BX*8), AX	// k1 of the slot
	CMPQ	AX, R8
	JNE	slow
	MOVQ	16(DX)(BX*8), AX	// rest
	MOVQ	24(DX)(BX*8), DX	// own
	MOVQ	SI, BX
	SHRQ	$15, BX
	XORQ	AX, BX
	SHLQ	$27, BX	// the rest of lo must match
	JNE	slow
	ANDQ	$-16, CX
	SHRQ	CX, R11	// the slot's lane of verHi
	MOVQ	0(DI), BX
	CMPQ	BX, R9
	JNE	slow
	MOVQ	AX, rest+24(FP)
	MOVQ	DX, own+32(FP)
	MOVQ	R11, hi+40(FP)
	MOVQ	$1, st+48(FP)	// probeHit
	RET

miss:
	TESTQ	$1, R10	// no stash: the key is nowhere else
	JEQ	slow
	MOVQ	0(DI), BX
	CMPQ	BX, R9
	JNE	slow
	MOVQ	$0, rest+24(FP)
	MOVQ	$0, own+32(FP)
	MOVQ	$0, hi+40(FP)
	MOVQ	$0, st+48(FP)	// probeMiss
	RET

slow:
	MOVQ	$0, rest+24(FP)
	MOVQ	$0, own+32(FP)
	MOVQ	$0, hi+40(FP)
	MOVQ	$2, st+48(FP)	// probeSlow
	RET
