package homeindex

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/domicile/domicile/residency"
)

// Errors returned by writes. They are values, so they survive the trip
// through the Raft log, the leader's batcher and the internal HTTP API.
var (
	// ErrConflict: a key is already held by another owner.
	ErrConflict = errors.New("identifier already claimed by another user")
	// ErrNoLeader: the cluster has no leader right now; retry later.
	ErrNoLeader = errors.New("home index has no leader")
	// ErrInvalid: the command is malformed (bad key count, owner, ...).
	ErrInvalid = errors.New("invalid index command")
	// ErrUnknownRegion: the region is not in any policy the index has seen.
	ErrUnknownRegion = errors.New("unknown region")
	// ErrFenced: a re-homing found the entry changed since the caller read it.
	ErrFenced = errors.New("index entry changed since the fence version")
	// ErrStalePolicy: a policy version not newer than the one in force.
	ErrStalePolicy = errors.New("policy version is not newer than the one in force")
)

// Limits on one command, checked before it is proposed and again when it
// is applied, so a bad command is refused whole.
const (
	MaxKeysPerCommand = 16
	MaxRegionLen      = 32
	MaxPolicyBytes    = 1 << 20
	// MaxBatch is the most commands the leader packs into one log entry.
	MaxBatch = 512
)

// OwnerID is the fingerprint of an owner (a region-prefixed user id). The
// index keeps 48 bits of it: enough that two owners contending for one
// identifier collide with probability 2^-48, and the user id itself never
// enters the index.
type OwnerID uint64

const ownerMask = 1<<48 - 1

// OwnerOf returns the fingerprint of an owner id.
func OwnerOf(owner string) OwnerID {
	sum := sha256.Sum256([]byte("owner:" + owner))
	id := binary.BigEndian.Uint64(sum[:8]) & ownerMask
	if id == 0 {
		id = 1 // 0 means "no owner"
	}
	return OwnerID(id)
}

// newReqID returns a random, non-zero request id.
func newReqID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// sessionKey is how a revoked session id is kept: hashed, so the index
// never holds a usable session id.
func sessionKey(sid string) Key {
	sum := sha256.Sum256([]byte("sid:" + sid))
	var k Key
	copy(k[:], sum[:KeySize])
	return k
}

type opCode byte

const (
	opClaim opCode = iota + 1
	opRelease
	opRehome
	opRevoke
	opSetPolicy
	opSetMember
	opRemoveMember
	opSetClient
	opDeleteClient
)

func (o opCode) String() string {
	switch o {
	case opClaim:
		return "claim"
	case opRelease:
		return "release"
	case opRehome:
		return "rehome"
	case opRevoke:
		return "revoke"
	case opSetPolicy:
		return "policy"
	case opSetMember:
		return "member"
	case opRemoveMember:
		return "remove-member"
	case opSetClient:
		return "client"
	case opDeleteClient:
		return "delete-client"
	}
	return fmt.Sprintf("op(%d)", byte(o))
}

// command is one replicated change. Only the fields of its op are used.
type command struct {
	Op opCode
	// ReqID identifies one logical request across its retries: a command
	// whose ReqID was applied recently is not applied again, its first
	// result is returned instead (see fsm.dedupe). 0 means none.
	ReqID   uint64
	Keys    []Key
	Region  string // claim: region; rehome: from
	To      string // rehome
	Owner   OwnerID
	Fence   uint32 // rehome
	Expires int64  // revoke: unix milliseconds
	Version int    // set-policy
	Data    []byte // set-policy: YAML; set-client: the client's metadata
	ID      string // member, client
	API     string // member
	Rule    string // claim: the residency rule that picked the region (for counts)
}

// Client registry limits: OAuth client metadata is replicated to every
// region through the index (it is not personal data).
const (
	MaxClientIDLen = 128
	MaxClientBytes = 16 << 10
)

// ValidClientID reports whether id can name an OAuth client: 1 to
// MaxClientIDLen characters from the URL-safe set [A-Za-z0-9._~-].
func ValidClientID(id string) bool {
	if id == "" || len(id) > MaxClientIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}

// MaxRuleLen bounds the rule id a claim may carry.
const MaxRuleLen = 160

func (c *command) validate() error {
	switch c.Op {
	case opClaim, opRelease, opRehome:
		if len(c.Keys) == 0 || len(c.Keys) > MaxKeysPerCommand {
			return fmt.Errorf("%w: keys: want 1..%d, got %d", ErrInvalid, MaxKeysPerCommand, len(c.Keys))
		}
		if c.Owner == 0 || c.Owner&^ownerMask != 0 {
			return fmt.Errorf("%w: owner: missing", ErrInvalid)
		}
	case opRevoke:
		if len(c.Keys) != 1 || c.Expires <= 0 {
			return fmt.Errorf("%w: revoke: want one session and an expiry", ErrInvalid)
		}
	case opSetPolicy:
		if c.Version < 1 || len(c.Data) == 0 || len(c.Data) > MaxPolicyBytes {
			return fmt.Errorf("%w: policy: want version >= 1 and 1..%d bytes", ErrInvalid, MaxPolicyBytes)
		}
	case opSetMember, opRemoveMember:
		if c.ID == "" || len(c.ID) > 128 || len(c.API) > 512 {
			return fmt.Errorf("%w: member: bad id or address", ErrInvalid)
		}
	case opSetClient, opDeleteClient:
		if !ValidClientID(c.ID) {
			return fmt.Errorf("%w: client id: want 1..%d characters from [A-Za-z0-9._~-]", ErrInvalid, MaxClientIDLen)
		}
		if c.Op == opSetClient && (len(c.Data) == 0 || len(c.Data) > MaxClientBytes) {
			return fmt.Errorf("%w: client: want 1..%d bytes of metadata", ErrInvalid, MaxClientBytes)
		}
		if c.Op == opDeleteClient && len(c.Data) != 0 {
			return fmt.Errorf("%w: delete-client: no metadata expected", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: op: unknown %d", ErrInvalid, byte(c.Op))
	}
	if c.ID != "" && c.Op != opSetMember && c.Op != opRemoveMember && c.Op != opSetClient && c.Op != opDeleteClient {
		return fmt.Errorf("%w: id belongs to member and client commands only", ErrInvalid)
	}
	if c.API != "" && c.Op != opSetMember && c.Op != opRemoveMember {
		return fmt.Errorf("%w: api belongs to member commands only", ErrInvalid)
	}
	if c.Op == opClaim && len(c.Rule) > MaxRuleLen {
		return fmt.Errorf("%w: rule: longer than %d bytes", ErrInvalid, MaxRuleLen)
	}
	if c.Op == opClaim && !residency.ValidRegionName(c.Region) {
		return fmt.Errorf("%w: region: %q is not a region name", ErrInvalid, c.Region)
	}
	if c.Op == opRehome && (!residency.ValidRegionName(c.Region) || !residency.ValidRegionName(c.To)) {
		return fmt.Errorf("%w: rehome: bad region name", ErrInvalid)
	}
	return nil
}

// Log entry format: one format byte, then a uvarint count of commands,
// then each command: op byte and its fields. Strings and byte slices are
// uvarint-length-prefixed.
const entryFormat byte = 2

func encodeBatch(cmds []*command) []byte {
	b := make([]byte, 0, 64*len(cmds))
	b = append(b, entryFormat)
	b = binary.AppendUvarint(b, uint64(len(cmds)))
	for _, c := range cmds {
		b = c.appendTo(b)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (c *command) appendTo(b []byte) []byte {
	b = append(b, byte(c.Op))
	b = binary.AppendUvarint(b, c.ReqID)
	switch c.Op {
	case opClaim, opRelease, opRehome, opRevoke:
		b = binary.AppendUvarint(b, uint64(len(c.Keys)))
		for i := range c.Keys {
			b = append(b, c.Keys[i][:]...)
		}
	}
	switch c.Op {
	case opClaim:
		b = appendString(b, c.Region)
		b = binary.AppendUvarint(b, uint64(c.Owner))
		b = appendString(b, c.Rule)
	case opRelease:
		b = binary.AppendUvarint(b, uint64(c.Owner))
	case opRehome:
		b = binary.AppendUvarint(b, uint64(c.Owner))
		b = appendString(b, c.Region)
		b = appendString(b, c.To)
		b = binary.AppendUvarint(b, uint64(c.Fence))
	case opRevoke:
		b = binary.AppendVarint(b, c.Expires)
	case opSetPolicy:
		b = binary.AppendUvarint(b, uint64(c.Version))
		b = appendString(b, string(c.Data))
	case opSetMember:
		b = appendString(b, c.ID)
		b = appendString(b, c.API)
	case opRemoveMember:
		b = appendString(b, c.ID)
	case opSetClient:
		b = appendString(b, c.ID)
		b = appendString(b, string(c.Data))
	case opDeleteClient:
		b = appendString(b, c.ID)
	}
	return b
}

// decoder reads the log entry format; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: log entry: truncated or corrupt %s", ErrInvalid, what)
	}
}

func (d *decoder) byte1(what string) byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint(what string, max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > max {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(what string, max int) []byte {
	n := int(d.uvarint(what, uint64(max)))
	if d.err != nil || len(d.b) < n {
		d.fail(what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func decodeBatch(data []byte) ([]*command, error) {
	d := &decoder{b: data}
	if f := d.byte1("format"); d.err == nil && f != entryFormat {
		return nil, fmt.Errorf("%w: log entry: unknown format %d", ErrInvalid, f)
	}
	n := int(d.uvarint("count", MaxBatch))
	cmds := make([]*command, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		c := &command{Op: opCode(d.byte1("op"))}
		c.ReqID = d.uvarint("request id", 1<<64-1)
		switch c.Op {
		case opClaim, opRelease, opRehome, opRevoke:
			k := int(d.uvarint("key count", MaxKeysPerCommand))
			if d.err == nil && len(d.b) < k*KeySize {
				d.fail("keys")
			}
			if d.err == nil {
				c.Keys = make([]Key, k)
				for j := range c.Keys {
					copy(c.Keys[j][:], d.b[j*KeySize:])
				}
				d.b = d.b[k*KeySize:]
			}
		}
		switch c.Op {
		case opClaim:
			c.Region = string(d.bytes("region", MaxRegionLen))
			c.Owner = OwnerID(d.uvarint("owner", ownerMask))
			c.Rule = string(d.bytes("rule", MaxRuleLen))
		case opRelease:
			c.Owner = OwnerID(d.uvarint("owner", ownerMask))
		case opRehome:
			c.Owner = OwnerID(d.uvarint("owner", ownerMask))
			c.Region = string(d.bytes("from", MaxRegionLen))
			c.To = string(d.bytes("to", MaxRegionLen))
			c.Fence = uint32(d.uvarint("fence", 1<<32-1))
		case opRevoke:
			c.Expires = d.varint("expiry")
		case opSetPolicy:
			c.Version = int(d.uvarint("policy version", 1<<31))
			c.Data = d.bytes("policy", MaxPolicyBytes)
		case opSetMember:
			c.ID = string(d.bytes("member id", 128))
			c.API = string(d.bytes("member api", 512))
		case opRemoveMember:
			c.ID = string(d.bytes("member id", 128))
		case opSetClient:
			c.ID = string(d.bytes("client id", MaxClientIDLen))
			c.Data = d.bytes("client", MaxClientBytes)
		case opDeleteClient:
			c.ID = string(d.bytes("client id", MaxClientIDLen))
		default:
			d.fail("op")
		}
		cmds = append(cmds, c)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailer")
	}
	return cmds, d.err
}
