package provider

import "github.com/entraredis/entraredis/internal/certs"

// ErrCertificatePassword is matched (errors.Is) by NewClientCertificate's error when the private key
// is encrypted and the password is missing or wrong.
var ErrCertificatePassword = certs.ErrPassword
