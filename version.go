package main

import "runtime/debug"

// version is set at build time with -ldflags "-X main.version=v1.2.3"; when it
// is not, versionString falls back to the module's build information.
var version = ""

// versionString returns the version `echohub version` prints.
func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	v := info.Main.Version
	if v == "" || v == "(devel)" {
		v = "dev"
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}
