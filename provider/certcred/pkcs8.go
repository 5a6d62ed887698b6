package certcred

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"

	"golang.org/x/crypto/scrypt"
)

// Encrypted PKCS#8 keys (RFC 5208, PBES2 of RFC 8018), which neither the standard library nor
// azidentity decrypts: what "openssl pkcs8 -topk8" and "openssl genpkey -aes256" write (PBKDF2
// with HMAC-SHA-256 and AES-256-CBC by default; -v2prf, -v2 and -scrypt choose the others below).
// PBES1 (MD5/SHA-1 with DES or RC2) is refused: OpenSSL has not written it by default since 1.1.

var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
)

// prfs are PBKDF2's pseudo-random functions by OID (hmacWithSHA1 when none is named).
var prfs = map[string]func() hash.Hash{
	"1.2.840.113549.2.7":  sha1.New,
	"1.2.840.113549.2.8":  sha256.New224,
	"1.2.840.113549.2.9":  sha256.New,
	"1.2.840.113549.2.10": sha512.New384,
	"1.2.840.113549.2.11": sha512.New,
}

type encryptedPrivateKeyInfo struct {
	Algo pkix.AlgorithmIdentifier
	Data []byte
}

type pbes2Params struct {
	KDF pkix.AlgorithmIdentifier
	Enc pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt       []byte
	Iterations int
	KeyLength  int                      `asn1:"optional"`
	PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
}

type scryptParams struct {
	Salt      []byte
	N, R, P   int
	KeyLength int `asn1:"optional"`
}

// Limits on the work an attacker-supplied file can ask for.
const (
	maxIterations = 10_000_000
	maxScryptN    = 1 << 20
)

// decryptPKCS8 returns the private key of an ENCRYPTED PRIVATE KEY block. A wrong password shows as
// bad padding or an unreadable key, both reported as ErrPassword.
func decryptPKCS8(der, password []byte) (crypto.PrivateKey, error) {
	var info encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) > 0 {
		return nil, errors.New("not an encrypted PKCS#8 key")
	}
	if !info.Algo.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("encryption %v is not PBES2: convert the key with openssl pkcs8 -topk8 -v2 aes-256-cbc", info.Algo.Algorithm)
	}
	var params pbes2Params
	if _, err := asn1.Unmarshal(info.Algo.Parameters.FullBytes, &params); err != nil {
		return nil, fmt.Errorf("PBES2 parameters: %w", err)
	}
	var (
		block   func([]byte) (cipher.Block, error)
		keySize int
	)
	switch alg := params.Enc.Algorithm; {
	case alg.Equal(oidAES128CBC):
		block, keySize = aes.NewCipher, 16
	case alg.Equal(oidAES192CBC):
		block, keySize = aes.NewCipher, 24
	case alg.Equal(oidAES256CBC):
		block, keySize = aes.NewCipher, 32
	case alg.Equal(oidDESEDE3CBC):
		block, keySize = des.NewTripleDESCipher, 24
	default:
		return nil, fmt.Errorf("cipher %v is not supported (AES-CBC or DES-EDE3-CBC)", alg)
	}
	var iv []byte
	if _, err := asn1.Unmarshal(params.Enc.Parameters.FullBytes, &iv); err != nil {
		return nil, fmt.Errorf("cipher parameters: %w", err)
	}
	key, err := deriveKey(params.KDF, password, keySize)
	if err != nil {
		return nil, err
	}
	c, err := block(key)
	if err != nil {
		return nil, err
	}
	if len(iv) != c.BlockSize() || len(info.Data) == 0 || len(info.Data)%c.BlockSize() != 0 {
		return nil, errors.New("malformed encrypted key")
	}
	plain := make([]byte, len(info.Data))
	cipher.NewCBCDecrypter(c, iv).CryptBlocks(plain, info.Data)
	n := int(plain[len(plain)-1])
	if n == 0 || n > c.BlockSize() {
		return nil, ErrPassword
	}
	for _, b := range plain[len(plain)-n:] {
		if int(b) != n {
			return nil, ErrPassword
		}
	}
	k, err := x509.ParsePKCS8PrivateKey(plain[:len(plain)-n])
	if err != nil {
		return nil, ErrPassword
	}
	return k, nil
}

func deriveKey(kdf pkix.AlgorithmIdentifier, password []byte, size int) ([]byte, error) {
	switch {
	case kdf.Algorithm.Equal(oidPBKDF2):
		var p pbkdf2Params
		if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &p); err != nil {
			return nil, fmt.Errorf("PBKDF2 parameters: %w", err)
		}
		h := sha1.New
		if len(p.PRF.Algorithm) > 0 {
			if h = prfs[p.PRF.Algorithm.String()]; h == nil {
				return nil, fmt.Errorf("PBKDF2 function %v is not supported (HMAC-SHA-1 or SHA-2)", p.PRF.Algorithm)
			}
		}
		if p.Iterations < 1 || p.Iterations > maxIterations || (p.KeyLength != 0 && p.KeyLength != size) {
			return nil, errors.New("PBKDF2 parameters out of range")
		}
		return pbkdf2.Key(h, string(password), p.Salt, p.Iterations, size)
	case kdf.Algorithm.Equal(oidScrypt):
		var p scryptParams
		if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &p); err != nil {
			return nil, fmt.Errorf("scrypt parameters: %w", err)
		}
		if p.N < 2 || p.N > maxScryptN || p.R < 1 || p.P < 1 || p.R*p.P >= 1<<30 || (p.KeyLength != 0 && p.KeyLength != size) {
			return nil, errors.New("scrypt parameters out of range")
		}
		return scrypt.Key(password, p.Salt, p.N, p.R, p.P, size)
	}
	return nil, fmt.Errorf("key derivation %v is not supported (PBKDF2 or scrypt)", kdf.Algorithm)
}
