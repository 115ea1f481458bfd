//! The binary's command line, hand-rolled to stay lean. Fault flags take an optional group
//! prefix: `--latency-ms 50` sets every group, `--pubmed-latency-ms 50` only PubMed; group
//! flags win over the unprefixed ones whatever their order.

use std::net::SocketAddr;

use crate::settings::{Faults, Group};
use crate::state::SimConfig;

pub const USAGE: &str = "\
upstream-sim: PubMed E-utilities, Semantic Scholar Graph API v1 and an OpenAI-compatible LLM on one port

USAGE: upstream-sim [--listen 127.0.0.1:9100] [OPTIONS]

Routes: /pubmed/{esearch,esummary,efetch}.fcgi (also /entrez/eutils/...), /s2/graph/v1/paper/search
(also /graph/v1/...), /v1/chat/completions, /v1/models; GET/POST /control, POST /control/reset,
GET /stats, GET /stats/prompts, POST /stats/reset.

OPTIONS
  --listen ADDR                 address to bind (default 127.0.0.1:9100; port 0 = any free port)
  --corpus-size N               papers in the synthetic corpus (default 3000)
  --seed N                      corpus seed (default fixed)
  --shared-fraction F           fraction of papers in both PubMed and S2 (default 0.6)
  --fault-seed N                seed of the fault dice (default random)
  --max-body-bytes N            request body limit (default 1048576)
  --stats-capacity N            ring buffer size for timestamps, users, traceparents (default 10000)
  --llm-chunk-delay-ms N        delay between streamed chunks (default 10)
  --llm-answer-latency-ms N     time to first token / non-streamed answer (default 0)
  --llm-api-key KEY             require 'Authorization: Bearer KEY' on /v1 (default none)
  --llm-stream-abort-rate F     fraction of streams cut off half-way, no [DONE] (default 0)
  --llm-token-ms N              generation time per answer word, streamed or not (default 0)
  --llm-answer-pad-words N      pad answers with filler words up to N words (default 0)
  --hostile BOOL                hostile literature: HTML, images, javascript: links, control
                                characters, &#0;, prompt injections, oversized fields (default false)
Fault flags, for every group or, with a prefix pubmed-, s2- or llm-, for one:
  --[GROUP-]latency-ms N        fixed delay before each answer (default 0)
  --[GROUP-]jitter-ms N         plus uniform random 0..=N ms (default 0)
  --[GROUP-]error-rate F        fraction answered with the error status (default 0)
  --[GROUP-]error-status N      status of injected errors, 400..=599 (default 500)
  --[GROUP-]throttle-rate F     fraction answered 429 with Retry-After (alias: 429-rate) (default 0)
  --[GROUP-]retry-after-secs N  Retry-After of injected 429s (default 1)
  --[GROUP-]hang-rate F         fraction that never answer until the client gives up (default 0)
  --[GROUP-]hang-max-ms N       a hang ends with 504 after this long (default 600000)
  --[GROUP-]rate-limit-per-sec N  enforce N accepted requests per 1 s window, else 429 (0 = off)
  -h, --help                    this text
";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Run {
        listen: SocketAddr,
        config: Box<SimConfig>,
    },
    Help,
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("invalid value for --{flag}: '{v}'"))
}

/// Sets one fault field; `Ok(false)` if `name` is not a fault flag.
fn set_fault(f: &mut Faults, name: &str, v: &str, flag: &str) -> Result<bool, String> {
    match name {
        "latency-ms" => f.latency_ms = num(flag, v)?,
        "jitter-ms" => f.jitter_ms = num(flag, v)?,
        "error-rate" => f.error_rate = num(flag, v)?,
        "error-status" => f.error_status = num(flag, v)?,
        "throttle-rate" | "429-rate" => f.throttle_rate = num(flag, v)?,
        "retry-after-secs" => f.retry_after_secs = num(flag, v)?,
        "hang-rate" => f.hang_rate = num(flag, v)?,
        "hang-max-ms" => f.hang_max_ms = num(flag, v)?,
        "rate-limit-per-sec" => f.rate_limit_per_sec = num(flag, v)?,
        _ => return Ok(false),
    }
    Ok(true)
}

const FLAGS: &[&str] = &[
    "listen",
    "corpus-size",
    "seed",
    "shared-fraction",
    "fault-seed",
    "max-body-bytes",
    "stats-capacity",
    "llm-chunk-delay-ms",
    "llm-answer-latency-ms",
    "llm-api-key",
    "llm-stream-abort-rate",
    "llm-token-ms",
    "llm-answer-pad-words",
    "hostile",
];

const FAULT_FLAGS: &[&str] = &[
    "latency-ms",
    "jitter-ms",
    "error-rate",
    "error-status",
    "throttle-rate",
    "429-rate",
    "retry-after-secs",
    "hang-rate",
    "hang-max-ms",
    "rate-limit-per-sec",
];

fn is_known(name: &str) -> bool {
    let fault = Group::ALL
        .into_iter()
        .find_map(|g| {
            name.strip_prefix(g.as_str())
                .and_then(|r| r.strip_prefix('-'))
        })
        .unwrap_or(name);
    FLAGS.contains(&name) || FAULT_FLAGS.contains(&fault)
}

/// Parses arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut listen: SocketAddr = "127.0.0.1:9100"
        .parse()
        .map_err(|_| "bad default address".to_string())?;
    let mut cfg = SimConfig::default();
    let mut group_flags: Vec<(Group, String, String, String)> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument '{arg}'"));
        };
        let name = flag.split_once('=').map_or(flag, |(f, _)| f);
        if !is_known(name) {
            return Err(format!("unknown flag --{name} (see --help)"));
        }
        let (flag, value) = match flag.split_once('=') {
            Some((f, v)) => (f.to_string(), v.to_string()),
            None => {
                let v = args
                    .next()
                    .ok_or_else(|| format!("--{flag} needs a value"))?;
                (flag.to_string(), v)
            }
        };
        let v = value.as_str();
        match flag.as_str() {
            "listen" => listen = num(&flag, v)?,
            "corpus-size" => cfg.corpus.size = num(&flag, v)?,
            "seed" => cfg.corpus.seed = num(&flag, v)?,
            "shared-fraction" => cfg.corpus.shared_fraction = num(&flag, v)?,
            "fault-seed" => cfg.fault_seed = Some(num(&flag, v)?),
            "max-body-bytes" => cfg.max_body_bytes = num(&flag, v)?,
            "stats-capacity" => cfg.stats_capacity = num(&flag, v)?,
            "llm-chunk-delay-ms" => cfg.settings.llm_chunk_delay_ms = num(&flag, v)?,
            "llm-answer-latency-ms" => cfg.settings.llm_answer_latency_ms = num(&flag, v)?,
            "llm-api-key" => cfg.settings.llm_api_key = (!v.is_empty()).then(|| v.to_string()),
            "llm-stream-abort-rate" => cfg.settings.llm_stream_abort_rate = num(&flag, v)?,
            "llm-token-ms" => cfg.settings.llm_token_ms = num(&flag, v)?,
            "llm-answer-pad-words" => cfg.settings.llm_answer_pad_words = num(&flag, v)?,
            "hostile" => cfg.settings.hostile = num(&flag, v)?,
            _ => {
                let prefixed = Group::ALL.into_iter().find_map(|g| {
                    flag.strip_prefix(&format!("{}-", g.as_str()))
                        .map(|rest| (g, rest.to_string()))
                });
                match prefixed {
                    Some((g, rest)) => group_flags.push((g, rest, value.clone(), flag.clone())),
                    None => {
                        let mut known = false;
                        for g in Group::ALL {
                            known = set_fault(cfg.settings.faults_mut(g), &flag, v, &flag)?;
                        }
                        if !known {
                            return Err(format!("unknown flag --{flag} (see --help)"));
                        }
                    }
                }
            }
        }
    }
    for (g, name, v, flag) in group_flags {
        if !set_fault(cfg.settings.faults_mut(g), &name, &v, &flag)? {
            return Err(format!("unknown flag --{flag} (see --help)"));
        }
    }
    if !(0.0..=1.0).contains(&cfg.corpus.shared_fraction) {
        return Err("--shared-fraction must be within 0..=1".to_string());
    }
    cfg.settings.validate().map_err(|e| e.to_string())?;
    Ok(Command::Run {
        listen,
        config: Box::new(cfg),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(args: &[&str]) -> Result<(SocketAddr, SimConfig), String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run { listen, config } => Ok((listen, *config)),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn group_flags_override_global_ones() {
        let (addr, cfg) = run(&[
            "--pubmed-latency-ms",
            "50",
            "--latency-ms=10",
            "--error-rate",
            "0.5",
            "--s2-429-rate",
            "0.25",
            "--llm-chunk-delay-ms",
            "3",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(addr.port(), 0);
        assert_eq!(cfg.settings.pubmed.latency_ms, 50);
        assert_eq!(cfg.settings.s2.latency_ms, 10);
        assert_eq!(cfg.settings.llm.error_rate, 0.5);
        assert_eq!(cfg.settings.s2.throttle_rate, 0.25);
        assert_eq!(cfg.settings.llm_chunk_delay_ms, 3);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(run(&["--error-rate", "2"]).is_err());
        assert!(run(&["--bogus", "1"]).is_err());
        assert!(run(&["--pubmed-bogus", "1"]).is_err());
        assert!(run(&["--latency-ms"]).is_err());
        assert!(run(&["--latency-ms", "x"]).is_err());
        assert!(run(&["stray"]).is_err());
        assert_eq!(run(&["--help"]).unwrap_err(), "help");
    }
}
