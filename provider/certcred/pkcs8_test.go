package certcred

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDecryptPKCS8OpenSSL decrypts keys that OpenSSL 3.0 encrypted with each option of
// "openssl pkcs8 -topk8" (testdata: a throwaway test key, password "correct-horse"), so the
// decryption is checked against another implementation, not only against entratest's encryptor.
func TestDecryptPKCS8OpenSSL(t *testing.T) {
	read := func(name string) *pem.Block {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		require.NoError(t, err)
		b, _ := pem.Decode(data)
		require.NotNil(t, b, name)
		return b
	}
	want, err := parseKey("PRIVATE KEY", read("key.pem").Bytes)
	require.NoError(t, err)
	for _, tc := range []struct {
		file    string
		wantErr string // part of the error; "" for success
	}{
		{"openssl-default.pem", ""},       // PBKDF2 HMAC-SHA-256, AES-256-CBC
		{"openssl-aes128-sha1.pem", ""},   // PBKDF2 with the default PRF (HMAC-SHA-1), AES-128-CBC
		{"openssl-aes192-sha512.pem", ""}, // HMAC-SHA-512, AES-192-CBC
		{"openssl-des3.pem", ""},          // DES-EDE3-CBC
		{"openssl-scrypt.pem", ""},        // scrypt
		{"openssl-pbes1.pem", "not PBES2"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b := read(tc.file)
			require.Equal(t, "ENCRYPTED PRIVATE KEY", b.Type)
			got, err := decryptPKCS8(b.Bytes, []byte("correct-horse"))
			if tc.wantErr != "" {
				assert.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, want, got)
			_, err = decryptPKCS8(b.Bytes, []byte("wrong-horse"))
			assert.ErrorIs(t, err, ErrPassword, "a wrong password")
		})
	}
	_, err = decryptPKCS8([]byte("garbage"), []byte("x"))
	assert.ErrorContains(t, err, "not an encrypted PKCS#8 key")
}
