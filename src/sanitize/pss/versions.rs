//! PodSecurity's check registry as a version table: which revision of each check runs at a
//! pinned policy version, and which baseline checks a restricted check replaces.
//!
//! This is the data of `k8s.io/pod-security-admission`'s `policy/check_*.go` (each check's
//! `Versions: []VersionedCheck{{MinimumVersion: …}, …}` and `OverrideCheckIDs`) and the
//! resolution rules of `policy/registry.go`, as of the v1.37 development branch:
//!
//! * a check's revision at policy version `v1.N` is its newest `MinimumVersion` ≤ N; a check
//!   with no such revision does not run at `v1.N` (`inflateVersions`);
//! * `latest`, and any version newer than the newest `MinimumVersion` of any check
//!   (`maxVersion`, here [`LATEST_MINOR`]), evaluate as `maxVersion` (`EvaluatePod`:
//!   `if r.maxVersion.Older(lv.Version) { lv.Version = r.maxVersion }`; `api.Version.Older`
//!   ranks `latest` above every numbered version);
//! * the baseline level runs the baseline checks; the restricted level runs the restricted
//!   checks plus every baseline check that no restricted check active at that version names in
//!   its `OverrideCheckIDs` (`populate`).
//!
//! Two allowances were patched into a 1.0 revision upstream rather than versioned, so they hold
//! at every pinned version: `image` volumes under `restrictedVolumes` (since v1.33, PR #130394)
//! and the `appArmorProfile` security-context fields (since v1.30, PR #123435).

use super::{Level, Version};

/// One registered check: its ID, level, revisions and the baseline check it replaces.
#[derive(Debug)]
pub struct CheckSpec {
    /// The check ID, as PodSecurity names it.
    pub id: &'static str,
    /// `Baseline` or `Restricted`.
    pub level: Level,
    /// The `MinimumVersion` minor of each revision, strictly increasing.
    pub revisions: &'static [u64],
    /// The baseline check whose result this one replaces at the restricted level (every
    /// revision of each overriding check upstream names the same ID).
    pub overrides: Option<&'static str>,
}

const fn spec(
    id: &'static str,
    level: Level,
    revisions: &'static [u64],
    overrides: Option<&'static str>,
) -> CheckSpec {
    CheckSpec {
        id,
        level,
        revisions,
        overrides,
    }
}

use Level::{Baseline as B, Restricted as R};

/// Every check, in PodSecurity's order (baseline checks sorted by ID, then restricted ones).
/// Each line cites the upstream file that declares the revisions.
pub const REGISTRY: &[CheckSpec] = &[
    // check_appArmorProfile.go: appArmorProfile_1_0 (annotations; the fields since v1.30, unversioned)
    spec("appArmorProfile", B, &[0], None),
    // check_capabilities_baseline.go: capabilities_baseline_1_0
    spec("capabilities_baseline", B, &[0], None),
    // check_hostNamespaces.go: hostNamespaces_1_0
    spec("hostNamespaces", B, &[0], None),
    // check_hostPathVolumes.go: hostPathVolumes_1_0
    spec("hostPathVolumes", B, &[0], None),
    // check_hostPorts.go: hostPorts_1_0
    spec("hostPorts", B, &[0], None),
    // check_hostProbesAndhostLifecycle.go: hostProbesAndHostLifecycleV1Dot34 (new in v1.34)
    spec("hostProbesAndHostLifecycle", B, &[34], None),
    // check_privileged.go: privileged_1_0
    spec("privileged", B, &[0], None),
    // check_procMount_baseline.go: procMount_1_0, procMount1_35baseline (hostUsers: false relaxed)
    spec("procMount", B, &[0, 35], None),
    // check_seLinuxOptions.go: seLinuxOptions_1_0, seLinuxOptions1_31 (+ container_engine_t)
    spec("seLinuxOptions", B, &[0, 31], None),
    // check_seccompProfile_baseline.go: seccompProfileBaseline_1_0 (the alpha annotations),
    // seccompProfileBaseline_1_19 (the seccompProfile fields)
    spec("seccompProfile_baseline", B, &[0, 19], None),
    // check_sysctls.go: sysctlsV1Dot0, V1Dot27, V1Dot29, V1Dot32, V1Dot37 (the safe set grows)
    spec("sysctls", B, &[0, 27, 29, 32, 37], None),
    // check_windowsHostProcess.go: windowsHostProcess_1_0
    spec("windowsHostProcess", B, &[0], None),
    // check_allowPrivilegeEscalation.go: allowPrivilegeEscalation_1_8 (the field is new in 1.8:
    // no check before), allowPrivilegeEscalation_1_25 (windows pods exempt)
    spec("allowPrivilegeEscalation", R, &[8, 25], None),
    // check_capabilities_restricted.go: capabilitiesRestricted_1_22, _1_25 (windows exempt)
    spec(
        "capabilities_restricted",
        R,
        &[22, 25],
        Some("capabilities_baseline"),
    ),
    // check_procMount_restricted.go: procMount_1_0 re-applied unconditionally from v1.35
    spec("procMount_restricted", R, &[35], Some("procMount")),
    // check_restrictedVolumes.go: restrictedVolumes_1_0
    spec("restrictedVolumes", R, &[0], Some("hostPathVolumes")),
    // check_runAsNonRoot.go: runAsNonRoot_1_0, runAsNonRoot1_35 (hostUsers: false exempt)
    spec("runAsNonRoot", R, &[0, 35], None),
    // check_runAsUser.go: runAsUser_1_23, runAsUser1_35 (hostUsers: false exempt)
    spec("runAsUser", R, &[23, 35], None),
    // check_seccompProfile_restricted.go: seccompProfileRestricted_1_19, _1_25 (windows exempt)
    spec(
        "seccompProfile_restricted",
        R,
        &[19, 25],
        Some("seccompProfile_baseline"),
    ),
];

/// `maxVersion`: the newest `MinimumVersion` of any check, which `latest` evaluates as.
pub const LATEST_MINOR: u64 = 37;

/// The minor version whose rules apply: `latest` and anything newer than [`LATEST_MINOR`]
/// evaluate as [`LATEST_MINOR`].
pub fn effective_minor(version: Version) -> u64 {
    match version {
        Version::Latest => LATEST_MINOR,
        Version::V1(m) => m.min(LATEST_MINOR),
    }
}

fn find(id: &str) -> Option<&'static CheckSpec> {
    REGISTRY.iter().find(|c| c.id == id)
}

/// The revision (`MinimumVersion` minor) of check `id` at `version`, ignoring level and
/// overrides; `None` when the check does not exist yet at that version.
pub fn revision(id: &str, version: Version) -> Option<u64> {
    let at = effective_minor(version);
    find(id)?
        .revisions
        .iter()
        .rev()
        .find(|&&min| min <= at)
        .copied()
}

/// The revision of check `id` that PodSecurity runs for `level` at `version`, or `None` when
/// that check does not run: a privileged level, a restricted check at the baseline level, a
/// check newer than `version`, or a baseline check that an active restricted check overrides.
pub fn active(id: &str, level: Level, version: Version) -> Option<u64> {
    let at = REGISTRY.iter().position(|c| c.id == id)?;
    resolve(level, version).0[at]
}

/// Every check's active revision for one level and version, resolved once per pod spec.
#[derive(Debug)]
pub struct Resolved([Option<u64>; REGISTRY.len()]);

impl Resolved {
    /// The active revision of check `id` (see [`active`]).
    pub fn get(&self, id: &str) -> Option<u64> {
        let at = REGISTRY.iter().position(|c| c.id == id)?;
        self.0[at]
    }
}

/// [`active`] for every check at once.
pub fn resolve(level: Level, version: Version) -> Resolved {
    let mut out = [None; REGISTRY.len()];
    for (slot, spec) in out.iter_mut().zip(REGISTRY) {
        let runs_at_level = match level {
            Level::Privileged => false,
            Level::Baseline => spec.level == Level::Baseline,
            Level::Restricted => true,
        };
        if runs_at_level {
            *slot = revision(spec.id, version);
        }
    }
    if level == Level::Restricted {
        // `populate`: drop each baseline check an active restricted check overrides.
        for (i, spec) in REGISTRY.iter().enumerate() {
            let Some(target) = spec.overrides else {
                continue;
            };
            if out[i].is_some() {
                if let Some(t) = REGISTRY.iter().position(|c| c.id == target) {
                    out[t] = None;
                }
            }
        }
    }
    Resolved(out)
}

/// The check IDs PodSecurity runs for `level` at `version`, in its order.
pub fn active_ids(level: Level, version: Version) -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|c| active(c.id, level, version).is_some())
        .map(|c| c.id)
        .collect()
}
