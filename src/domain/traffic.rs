//! The traffic policy of a release: a weight for the gray version, or match
//! rules that send the requests they match to it. The rules of the contract
//! are checked here, each violation naming its field.

use serde::{Deserialize, Serialize};

use super::error::Violation;
use super::kinds::ReleaseType;
use super::names::quoted;

/// Most match rules in one policy, and most headers or query parameters in
/// one rule.
pub const MAX_RULES: usize = 16;
pub const MAX_MATCHES: usize = 16;
/// Longest regex accepted, in bytes. Envoy compiles each regex into an RE2
/// program; long ones are slow to compile and refused by its size limit.
pub const MAX_REGEX_LEN: usize = 1024;
/// Longest exact value or name, in bytes.
pub const MAX_VALUE_LEN: usize = 256;
/// The compiled size a regex may reach (the `regex` crate's measure).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Percent of requests to the gray version.
    Weight(u8),
    /// Requests matching any rule go to the gray version.
    Match(Vec<MatchRule>),
}

impl Default for TrafficPolicy {
    fn default() -> Self {
        TrafficPolicy::Weight(0)
    }
}

impl TrafficPolicy {
    /// The share of requests the gray version gets, where a weight says it.
    pub fn gray_weight(&self) -> Option<u8> {
        match self {
            TrafficPolicy::Weight(w) => Some(*w),
            TrafficPolicy::Match(_) => None,
        }
    }

    /// Whether the original version holds all traffic.
    pub fn original_holds_all(&self) -> bool {
        self.gray_weight() == Some(0)
    }

    /// Whether the gray version holds all traffic.
    pub fn gray_holds_all(&self) -> bool {
        self.gray_weight() == Some(100)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchRule {
    pub headers: Vec<StringMatch>,
    pub query_params: Vec<StringMatch>,
    /// A regex over the whole Cookie header.
    pub cookie: Option<String>,
    pub os: Vec<Os>,
    pub browsers: Vec<Browser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StringMatch {
    pub name: String,
    pub value: MatchValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchValue {
    Exact(String),
    Regex(String),
}

/// Operating systems a rule may name, each with the User-Agent fragment
/// (an RE2 regex) that tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Os {
    Android,
    Ios,
    Windows,
    MacOs,
    Linux,
}

impl Os {
    pub const ALL: [Os; 5] = [Os::Android, Os::Ios, Os::Windows, Os::MacOs, Os::Linux];

    pub fn as_str(self) -> &'static str {
        match self {
            Os::Android => "Android",
            Os::Ios => "iOS",
            Os::Windows => "Windows",
            Os::MacOs => "macOS",
            Os::Linux => "Linux",
        }
    }

    /// What its User-Agent contains. Linux means desktop Linux (X11):
    /// Android's User-Agent says "Linux" too.
    pub fn user_agent_pattern(self) -> &'static str {
        match self {
            Os::Android => "Android",
            Os::Ios => "iPhone|iPad|iPod",
            Os::Windows => "Windows",
            Os::MacOs => "Macintosh",
            Os::Linux => r"X11;[^)]*Linux",
        }
    }
}

/// Browsers a rule may name. Chrome matches every browser whose User-Agent
/// says `Chrome/` (Edge and Opera among them); Safari requires `Version/`,
/// which Chrome's User-Agent lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Browser {
    Chrome,
    Firefox,
    Safari,
    Edge,
    Opera,
    Ie,
}

impl Browser {
    pub const ALL: [Browser; 6] = [
        Browser::Chrome,
        Browser::Firefox,
        Browser::Safari,
        Browser::Edge,
        Browser::Opera,
        Browser::Ie,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Browser::Chrome => "Chrome",
            Browser::Firefox => "Firefox",
            Browser::Safari => "Safari",
            Browser::Edge => "Edge",
            Browser::Opera => "Opera",
            Browser::Ie => "IE",
        }
    }

    pub fn user_agent_pattern(self) -> &'static str {
        match self {
            Browser::Chrome => "Chrome/",
            Browser::Firefox => "Firefox/",
            Browser::Safari => r"Version/[0-9.]+[^;]*Safari/",
            Browser::Edge => "Edg/|Edge/",
            Browser::Opera => "OPR/|Opera",
            Browser::Ie => "MSIE |Trident/",
        }
    }
}

/// A traffic policy as the client sent it: nothing checked yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrafficPolicyDraft {
    pub weight: Option<i32>,
    pub match_rules: Vec<MatchRuleDraft>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MatchRuleDraft {
    pub headers: Vec<StringMatchDraft>,
    pub query_params: Vec<StringMatchDraft>,
    /// `cookie.regex`, where a cookie was given.
    pub cookie: Option<String>,
    pub os: Vec<String>,
    pub browsers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StringMatchDraft {
    pub name: String,
    pub exact: Option<String>,
    pub regex: Option<String>,
}

/// Checks a policy for a release of `release_type`, reporting under `field`
/// (`spec.trafficPolicy`).
pub fn validate(
    draft: &TrafficPolicyDraft,
    release_type: Option<ReleaseType>,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<TrafficPolicy> {
    let before = violations.len();
    let policy = match (draft.weight, draft.match_rules.is_empty()) {
        (None, true) => {
            violations.push(Violation::new(
                field,
                "must give either weight (0 to 100) or match rules",
            ));
            return None;
        }
        (Some(_), false) => {
            violations.push(Violation::new(
                field,
                "gives both weight and match; give one of them",
            ));
            return None;
        }
        (Some(weight), true) => {
            let weight_field = format!("{field}.weight");
            match u8::try_from(weight).ok().filter(|w| *w <= 100) {
                None => {
                    violations.push(Violation::new(
                        weight_field,
                        format!("must be between 0 and 100, got {weight}"),
                    ));
                    None
                }
                Some(w) if release_type == Some(ReleaseType::BlueGreen) && w != 0 && w != 100 => {
                    violations.push(Violation::new(
                        weight_field,
                        format!("must be 0 or 100 for a blue-green release (a switch), got {w}"),
                    ));
                    None
                }
                Some(w) => Some(TrafficPolicy::Weight(w)),
            }
        }
        (None, false) => {
            let match_field = format!("{field}.match");
            if release_type == Some(ReleaseType::BlueGreen) {
                violations.push(Violation::new(
                    &match_field,
                    "is for canary releases only: a blue-green release switches with weight 0 or 100",
                ));
                return None;
            }
            if draft.match_rules.len() > MAX_RULES {
                violations.push(Violation::new(
                    &match_field,
                    format!(
                        "holds {} rules; at most {MAX_RULES} are allowed",
                        draft.match_rules.len()
                    ),
                ));
                return None;
            }
            let rules: Vec<MatchRule> = draft
                .match_rules
                .iter()
                .enumerate()
                .filter_map(|(i, rule)| {
                    validate_rule(rule, &format!("{match_field}[{i}]"), violations)
                })
                .collect();
            Some(TrafficPolicy::Match(rules))
        }
    };
    policy.filter(|_| violations.len() == before)
}

fn validate_rule(
    rule: &MatchRuleDraft,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<MatchRule> {
    let before = violations.len();
    let empty = rule.headers.is_empty()
        && rule.query_params.is_empty()
        && rule.cookie.is_none()
        && rule.os.is_empty()
        && rule.browsers.is_empty();
    if empty {
        violations.push(Violation::new(
            field,
            "must give at least one of headers, queryParams, cookie, os, browsers (an empty rule would match every request)",
        ));
        return None;
    }
    let headers = string_matches(&rule.headers, &format!("{field}.headers"), true, violations);
    let query_params = string_matches(
        &rule.query_params,
        &format!("{field}.queryParams"),
        false,
        violations,
    );
    let matches_header = |name: &str| rule.headers.iter().any(|h| h.name == name);
    let cookie = match &rule.cookie {
        None => None,
        Some(regex) => {
            let cookie_field = format!("{field}.cookie.regex");
            check_regex(regex, &cookie_field, violations);
            if matches_header("cookie") {
                violations.push(Violation::new(
                    &cookie_field,
                    "cannot be given with a \"cookie\" header match in the same rule",
                ));
            }
            Some(regex.clone())
        }
    };
    let os = named(
        &rule.os,
        &format!("{field}.os"),
        &Os::ALL,
        Os::as_str,
        violations,
    );
    let browsers = named(
        &rule.browsers,
        &format!("{field}.browsers"),
        &Browser::ALL,
        Browser::as_str,
        violations,
    );
    if (!os.is_empty() || !browsers.is_empty()) && matches_header("user-agent") {
        violations.push(Violation::new(
            format!("{field}.headers"),
            "cannot match \"user-agent\" in a rule that names os or browsers (they match on it)",
        ));
    }
    (violations.len() == before).then_some(MatchRule {
        headers,
        query_params,
        cookie,
        os,
        browsers,
    })
}

fn string_matches(
    drafts: &[StringMatchDraft],
    field: &str,
    header: bool,
    violations: &mut Vec<Violation>,
) -> Vec<StringMatch> {
    if drafts.len() > MAX_MATCHES {
        violations.push(Violation::new(
            field,
            format!("holds {}; at most {MAX_MATCHES} are allowed", drafts.len()),
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, draft) in drafts.iter().enumerate() {
        let item = format!("{field}[{i}]");
        let name_field = format!("{item}.name");
        if draft.name.is_empty() {
            violations.push(Violation::new(&name_field, "is required"));
        } else if draft.name.len() > MAX_VALUE_LEN {
            violations.push(Violation::new(
                &name_field,
                format!("is longer than {MAX_VALUE_LEN} bytes"),
            ));
        } else if header && !is_header_name(&draft.name) {
            violations.push(Violation::new(
                &name_field,
                format!(
                    "{} is not a lowercase HTTP header name (letters, digits and '-', as Istio requires)",
                    quoted(&draft.name)
                ),
            ));
        } else if drafts[..i].iter().any(|d| d.name == draft.name) {
            violations.push(Violation::new(
                &name_field,
                format!("{} is matched twice in this rule", quoted(&draft.name)),
            ));
        }
        let value = match (&draft.exact, &draft.regex) {
            (Some(exact), None) => {
                if exact.is_empty() || exact.len() > MAX_VALUE_LEN {
                    violations.push(Violation::new(
                        format!("{item}.exact"),
                        format!("must be 1 to {MAX_VALUE_LEN} bytes"),
                    ));
                }
                MatchValue::Exact(exact.clone())
            }
            (None, Some(regex)) => {
                check_regex(regex, &format!("{item}.regex"), violations);
                MatchValue::Regex(regex.clone())
            }
            (None, None) => {
                violations.push(Violation::new(&item, "must give exact or regex"));
                continue;
            }
            (Some(_), Some(_)) => {
                violations.push(Violation::new(
                    &item,
                    "gives both exact and regex; give one of them",
                ));
                continue;
            }
        };
        out.push(StringMatch {
            name: draft.name.clone(),
            value,
        });
    }
    out
}

fn is_header_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A regex Envoy would accept: RE2 syntax (no look-around, no
/// back-references), bounded in length and compiled size.
fn check_regex(regex: &str, field: &str, violations: &mut Vec<Violation>) {
    if regex.is_empty() {
        violations.push(Violation::new(field, "must not be empty"));
        return;
    }
    if regex.len() > MAX_REGEX_LEN {
        violations.push(Violation::new(
            field,
            format!("is longer than {MAX_REGEX_LEN} bytes"),
        ));
        return;
    }
    if let Err(e) = regex::RegexBuilder::new(regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        let reason = match e {
            regex::Error::CompiledTooBig(_) => "compiles to a program too large".to_owned(),
            regex::Error::Syntax(text) => {
                // The crate's message spans lines with a caret under the error.
                let last = text.lines().last().unwrap_or_default().trim().to_owned();
                format!("is not an RE2 regex: {last}")
            }
            other => format!("is not an RE2 regex: {other}"),
        };
        violations.push(Violation::new(field, reason));
    }
}

fn named<T: Copy + Ord>(
    values: &[String],
    field: &str,
    known: &[T],
    name: fn(T) -> &'static str,
    violations: &mut Vec<Violation>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match known.iter().copied().find(|k| name(*k) == value) {
            Some(k) if out.contains(&k) => violations.push(Violation::new(
                format!("{field}[{i}]"),
                format!("{} is named twice", quoted(value)),
            )),
            Some(k) => out.push(k),
            None => {
                let list: Vec<&str> = known.iter().map(|k| name(*k)).collect();
                violations.push(Violation::new(
                    format!("{field}[{i}]"),
                    format!("must be one of {}, got {}", list.join(", "), quoted(value)),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(draft: &TrafficPolicyDraft, kind: ReleaseType) -> Result<TrafficPolicy, Vec<String>> {
        let mut v = Vec::new();
        match validate(draft, Some(kind), "spec.trafficPolicy", &mut v) {
            Some(p) if v.is_empty() => Ok(p),
            _ => Err(v.into_iter().map(|v| v.field).collect()),
        }
    }

    fn weight(w: i32) -> TrafficPolicyDraft {
        TrafficPolicyDraft {
            weight: Some(w),
            ..Default::default()
        }
    }

    fn header(name: &str, exact: Option<&str>, regex: Option<&str>) -> StringMatchDraft {
        StringMatchDraft {
            name: name.into(),
            exact: exact.map(Into::into),
            regex: regex.map(Into::into),
        }
    }

    #[test]
    fn weights_are_percentages_and_blue_green_switches() {
        assert_eq!(
            check(&weight(30), ReleaseType::Canary),
            Ok(TrafficPolicy::Weight(30))
        );
        assert_eq!(
            check(&weight(0), ReleaseType::BlueGreen),
            Ok(TrafficPolicy::Weight(0))
        );
        assert_eq!(
            check(&weight(100), ReleaseType::BlueGreen),
            Ok(TrafficPolicy::Weight(100))
        );
        for bad in [-1, 101, i32::MAX] {
            assert_eq!(
                check(&weight(bad), ReleaseType::Canary),
                Err(vec!["spec.trafficPolicy.weight".to_owned()])
            );
        }
        assert_eq!(
            check(&weight(50), ReleaseType::BlueGreen),
            Err(vec!["spec.trafficPolicy.weight".to_owned()])
        );
    }

    #[test]
    fn exactly_one_of_weight_and_match() {
        let rule = MatchRuleDraft {
            os: vec!["iOS".into()],
            ..Default::default()
        };
        let both = TrafficPolicyDraft {
            weight: Some(1),
            match_rules: vec![rule.clone()],
        };
        assert_eq!(
            check(&both, ReleaseType::Canary),
            Err(vec!["spec.trafficPolicy".to_owned()])
        );
        assert_eq!(
            check(&TrafficPolicyDraft::default(), ReleaseType::Canary),
            Err(vec!["spec.trafficPolicy".to_owned()])
        );
        let only_match = TrafficPolicyDraft {
            weight: None,
            match_rules: vec![rule],
        };
        assert_eq!(
            check(&only_match, ReleaseType::BlueGreen),
            Err(vec!["spec.trafficPolicy.match".to_owned()])
        );
        assert!(check(&only_match, ReleaseType::Canary).is_ok());
    }

    #[test]
    fn every_bad_rule_names_its_field() {
        let draft = TrafficPolicyDraft {
            weight: None,
            match_rules: vec![
                MatchRuleDraft {
                    headers: vec![
                        header("X-User", Some("a"), None),
                        header("x-b", None, None),
                        header("x-c", Some("a"), Some("b")),
                        header("x-d", None, Some("(unclosed")),
                        header("x-e", None, Some("(?=lookahead)")),
                        header("x-f", Some(""), None),
                    ],
                    query_params: vec![header("", Some("1"), None)],
                    cookie: Some("a{1000}{1000}".into()),
                    os: vec!["BeOS".into()],
                    browsers: vec!["Chrome".into(), "Chrome".into()],
                },
                MatchRuleDraft::default(),
            ],
        };
        assert_eq!(
            check(&draft, ReleaseType::Canary),
            Err(vec![
                "spec.trafficPolicy.match[0].headers[0].name".to_owned(),
                "spec.trafficPolicy.match[0].headers[1]".to_owned(),
                "spec.trafficPolicy.match[0].headers[2]".to_owned(),
                "spec.trafficPolicy.match[0].headers[3].regex".to_owned(),
                "spec.trafficPolicy.match[0].headers[4].regex".to_owned(),
                "spec.trafficPolicy.match[0].headers[5].exact".to_owned(),
                "spec.trafficPolicy.match[0].queryParams[0].name".to_owned(),
                "spec.trafficPolicy.match[0].cookie.regex".to_owned(),
                "spec.trafficPolicy.match[0].os[0]".to_owned(),
                "spec.trafficPolicy.match[0].browsers[1]".to_owned(),
                "spec.trafficPolicy.match[1]".to_owned(),
            ])
        );
    }

    #[test]
    fn a_regex_of_the_longest_length_allowed_is_accepted() {
        let longest = "a".repeat(MAX_REGEX_LEN);
        let draft = TrafficPolicyDraft {
            weight: None,
            match_rules: vec![MatchRuleDraft {
                headers: vec![header("x-a", None, Some(&longest))],
                ..Default::default()
            }],
        };
        assert!(check(&draft, ReleaseType::Canary).is_ok());
    }

    #[test]
    fn long_regexes_and_conflicting_headers_are_refused() {
        let long = "a".repeat(MAX_REGEX_LEN + 1);
        let draft = TrafficPolicyDraft {
            weight: None,
            match_rules: vec![MatchRuleDraft {
                headers: vec![
                    header("x-a", None, Some(&long)),
                    header("cookie", Some("a=b"), None),
                    header("user-agent", Some("curl"), None),
                ],
                cookie: Some("^(.*?;)?(group=beta)(;.*)?$".into()),
                os: vec!["Android".into()],
                ..Default::default()
            }],
        };
        assert_eq!(
            check(&draft, ReleaseType::Canary),
            Err(vec![
                "spec.trafficPolicy.match[0].headers[0].regex".to_owned(),
                "spec.trafficPolicy.match[0].cookie.regex".to_owned(),
                "spec.trafficPolicy.match[0].headers".to_owned(),
            ])
        );
    }

    #[test]
    fn at_most_max_rules_match_rules() {
        let rules = |n: usize| TrafficPolicyDraft {
            weight: None,
            match_rules: (0..n)
                .map(|i| MatchRuleDraft {
                    headers: vec![header("x-user", Some(&format!("user-{i}")), None)],
                    ..Default::default()
                })
                .collect(),
        };
        let Ok(TrafficPolicy::Match(accepted)) = check(&rules(MAX_RULES), ReleaseType::Canary)
        else {
            panic!("{MAX_RULES} rules refused")
        };
        assert_eq!(accepted.len(), MAX_RULES);
        assert_eq!(
            check(&rules(MAX_RULES + 1), ReleaseType::Canary),
            Err(vec!["spec.trafficPolicy.match".to_owned()])
        );
    }

    #[test]
    fn matches_and_values_at_their_limits() {
        let rule = |headers: Vec<StringMatchDraft>| TrafficPolicyDraft {
            weight: None,
            match_rules: vec![MatchRuleDraft {
                headers,
                ..Default::default()
            }],
        };
        let many = |n: usize| {
            (0..n)
                .map(|i| header(&format!("x-h{i}"), Some("1"), None))
                .collect::<Vec<_>>()
        };
        assert!(check(&rule(many(MAX_MATCHES)), ReleaseType::Canary).is_ok());
        assert_eq!(
            check(&rule(many(MAX_MATCHES + 1)), ReleaseType::Canary),
            Err(vec!["spec.trafficPolicy.match[0].headers".to_owned()])
        );
        let long = |n: usize| "x".repeat(n);
        assert!(
            check(
                &rule(vec![header(
                    &long(MAX_VALUE_LEN),
                    Some(&long(MAX_VALUE_LEN)),
                    None
                )]),
                ReleaseType::Canary
            )
            .is_ok()
        );
        assert_eq!(
            check(
                &rule(vec![
                    header(&long(MAX_VALUE_LEN + 1), Some("1"), None),
                    header("x-b", Some(&long(MAX_VALUE_LEN + 1)), None),
                ]),
                ReleaseType::Canary
            ),
            Err(vec![
                "spec.trafficPolicy.match[0].headers[0].name".to_owned(),
                "spec.trafficPolicy.match[0].headers[1].exact".to_owned(),
            ])
        );
    }

    #[test]
    fn a_user_agent_header_clashes_with_os_or_browsers_only() {
        let rule = |os: Vec<String>, browsers: Vec<String>| TrafficPolicyDraft {
            weight: None,
            match_rules: vec![MatchRuleDraft {
                headers: vec![header("user-agent", None, Some(".*curl.*"))],
                os,
                browsers,
                ..Default::default()
            }],
        };
        assert!(check(&rule(vec![], vec![]), ReleaseType::Canary).is_ok());
        for (os, browsers) in [
            (vec!["iOS".to_owned()], vec![]),
            (vec![], vec!["Chrome".to_owned()]),
        ] {
            assert_eq!(
                check(&rule(os, browsers), ReleaseType::Canary),
                Err(vec!["spec.trafficPolicy.match[0].headers".to_owned()])
            );
        }
    }

    #[test]
    fn the_contracts_example_is_accepted() {
        let draft = TrafficPolicyDraft {
            weight: None,
            match_rules: vec![MatchRuleDraft {
                headers: vec![header("x-user", Some("alice"), None)],
                query_params: vec![header("beta", None, Some("^(1|true)$"))],
                cookie: Some("^(.*?;)?(group=beta)(;.*)?$".into()),
                os: vec!["iOS".into(), "Android".into()],
                browsers: vec!["Chrome".into()],
            }],
        };
        let Ok(TrafficPolicy::Match(rules)) = check(&draft, ReleaseType::Canary) else {
            panic!("refused")
        };
        assert_eq!(rules[0].os, vec![Os::Ios, Os::Android]);
        assert_eq!(rules[0].browsers, vec![Browser::Chrome]);
    }
}
