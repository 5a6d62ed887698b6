package entratest

import (
	"fmt"
	"os"
	"slices"
)

// miEnvCleared are the variables that would make azidentity.ManagedIdentityCredential pick another
// managed-identity source than the App Service protocol this package serves.
var miEnvCleared = []string{"IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"}

// ManagedIdentityEnv starts the managed-identity endpoint (as ServeManagedIdentity) and returns the
// environment under which azidentity.ManagedIdentityCredential uses it: IDENTITY_ENDPOINT and
// IDENTITY_HEADER, and the variables of other sources with an empty value, meaning unset. Use it to
// start another process (exec.Cmd.Env) against the emulator; ExportManagedIdentityEnv sets it in
// this process.
func (i *Issuer) ManagedIdentityEnv() (map[string]string, error) {
	endpoint, header, err := i.ServeManagedIdentity()
	if err != nil {
		return nil, err
	}
	env := map[string]string{"IDENTITY_ENDPOINT": endpoint, "IDENTITY_HEADER": header}
	for _, k := range miEnvCleared {
		env[k] = ""
	}
	return env, nil
}

// ExportManagedIdentityEnv is SetManagedIdentityEnv for a plain program (a local development stack,
// a demo): it sets ManagedIdentityEnv in this process's environment, and restore puts back what was
// there before. Like os.Setenv, it affects the whole process.
func (i *Issuer) ExportManagedIdentityEnv() (restore func(), err error) {
	env, err := i.ManagedIdentityEnv()
	if err != nil {
		return nil, err
	}
	type prev struct {
		value string
		set   bool
	}
	saved := map[string]prev{}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	restore = func() {
		for k, p := range saved {
			if p.set {
				_ = os.Setenv(k, p.value)
			} else {
				_ = os.Unsetenv(k)
			}
		}
	}
	for _, k := range keys {
		v, set := os.LookupEnv(k)
		saved[k] = prev{v, set}
		if env[k] == "" {
			err = os.Unsetenv(k)
		} else {
			err = os.Setenv(k, env[k])
		}
		if err != nil {
			restore()
			return nil, fmt.Errorf("entratest: setting %s: %w", k, err)
		}
	}
	return restore, nil
}
