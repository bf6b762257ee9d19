//! Topic templates and sanitising.
//!
//! **Invariant:** a value taken from sensor data can never add a topic level or a wildcard:
//! `/`, `+`, `#`, NUL and control characters are replaced before substitution, so the
//! number of levels of a topic is fixed by its template.

use std::fmt::Write;

/// A part of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Gateway,
    Input,
    Device,
    Sentence,
    Field,
}

/// A parsed topic template such as `site/{gateway}/{input}/{field}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

impl Template {
    /// Parses a template; placeholders are `{gateway}`, `{input}`, `{device}` (BLE inputs:
    /// the device's alias or address), `{sentence}` (NMEA inputs: the sentence type, `GGA`)
    /// and `{field}`.
    pub fn parse(text: &str) -> Result<Template, String> {
        if text.is_empty() {
            return Err("a topic template must not be empty".into());
        }
        if text.contains(['+', '#']) {
            return Err(format!(
                "`{text}` contains a wildcard (+ or #); a publish topic cannot"
            ));
        }
        if text.chars().any(|c| c == '\0' || c.is_control()) {
            return Err(format!(
                "`{}` contains a control character",
                text.escape_default()
            ));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("`{text}` has a `{{` without its `}}`"))?;
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "gateway" => Part::Gateway,
                "input" => Part::Input,
                "device" => Part::Device,
                "sentence" => Part::Sentence,
                "field" => Part::Field,
                other => {
                    return Err(format!(
                        "`{text}` uses `{{{other}}}`; the placeholders are {{gateway}}, {{input}}, {{device}}, {{sentence}} and {{field}}"
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}` has a `}}` without its `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template {
            parts,
            source: text.to_string(),
        })
    }

    /// Whether the template names `{field}`: then each field of a reading is its own message.
    pub fn per_field(&self) -> bool {
        self.parts.contains(&Part::Field)
    }

    /// Whether the template names `{device}` (only BLE inputs have devices).
    pub fn uses_device(&self) -> bool {
        self.parts.contains(&Part::Device)
    }

    /// Whether the template names `{sentence}` (only NMEA inputs have sentences).
    pub fn uses_sentence(&self) -> bool {
        self.parts.contains(&Part::Sentence)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders the topic; every substituted value is sanitised.
    pub fn render(&self, gateway: &str, input: &str, field: Option<&str>) -> String {
        self.render_device(gateway, input, None, field)
    }

    /// Renders the topic of a reading from `device` (`{device}` becomes `_` without one).
    pub fn render_device(
        &self,
        gateway: &str,
        input: &str,
        device: Option<&str>,
        field: Option<&str>,
    ) -> String {
        let labels = Labels {
            device,
            sentence: None,
        };
        self.render_labels(gateway, input, labels, field)
    }

    /// Renders the topic of a reading with its labels (a placeholder without its label
    /// becomes `_`).
    pub fn render_labels(
        &self,
        gateway: &str,
        input: &str,
        labels: Labels<'_>,
        field: Option<&str>,
    ) -> String {
        let device = labels.device;
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Gateway => push_sanitised(&mut out, gateway),
                Part::Input => push_sanitised(&mut out, input),
                Part::Device => push_sanitised(&mut out, device.unwrap_or("")),
                Part::Sentence => push_sanitised(&mut out, labels.sentence.unwrap_or("")),
                Part::Field => push_sanitised(&mut out, field.unwrap_or("")),
            }
        }
        out
    }
}

/// What a reading (not its fields) puts in its topic: `{device}` and `{sentence}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Labels<'a> {
    pub device: Option<&'a str>,
    pub sentence: Option<&'a str>,
}

/// Appends `value` with every character that could change the topic's structure replaced
/// by `_`. An empty value becomes `_` so that no level is ever empty.
pub fn push_sanitised(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    for c in value.chars() {
        if matches!(c, '/' | '+' | '#' | '\0') || c.is_control() {
            out.push('_');
        } else {
            out.push(c);
        }
    }
}

/// Returns `value` sanitised for one topic level.
pub fn sanitise(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    push_sanitised(&mut s, value);
    s
}

/// Describes a template for `sensorgate check`.
pub fn describe(t: &Template, qos: u8, retain: bool) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{} (qos {qos}{}, {})",
        t.as_str(),
        if retain { ", retained" } else { "" },
        if t.per_field() {
            "one message per field, plain value"
        } else {
            "one message per reading, JSON object"
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders() {
        let t = Template::parse("site/{gateway}/{input}/{field}").unwrap();
        assert!(t.per_field());
        assert_eq!(t.render("gw1", "wx", Some("temp")), "site/gw1/wx/temp");
        let t = Template::parse("site/{gateway}/{input}").unwrap();
        assert!(!t.per_field());
        assert_eq!(t.render("gw1", "wx", None), "site/gw1/wx");
        let t = Template::parse("site/{input}/{device}").unwrap();
        assert!(t.uses_device());
        assert_eq!(
            t.render_device("gw1", "yard", Some("a4c1/388e+1122"), None),
            "site/yard/a4c1_388e_1122"
        );
        assert_eq!(t.render("gw1", "yard", None), "site/yard/_");
        let t = Template::parse("site/{gateway}/{input}/{sentence}").unwrap();
        assert!(t.uses_sentence() && !t.uses_device() && !t.per_field());
        let labels = Labels {
            device: None,
            sentence: Some("G/A+#"),
        };
        assert_eq!(
            t.render_labels("gw1", "gps", labels, None),
            "site/gw1/gps/G_A__"
        );
        assert_eq!(t.render("gw1", "gps", None), "site/gw1/gps/_");
    }

    #[test]
    fn sensor_data_cannot_change_the_topic_structure() {
        let t = Template::parse("s/{input}/{field}").unwrap();
        let topic = t.render("gw", "in", Some("a/b+c#d\0e\nf\u{7f}g"));
        assert_eq!(topic, "s/in/a_b_c_d_e_f_g");
        assert_eq!(topic.matches('/').count(), 2);
        assert_eq!(t.render("gw", "in", Some("")), "s/in/_");
        assert_eq!(sanitise("température"), "température");
    }

    #[test]
    fn rejects_bad_templates() {
        for (bad, says) in [
            ("", "empty"),
            ("a/+/b", "wildcard"),
            ("a/#", "wildcard"),
            ("a/{sensor}", "{sensor}"),
            ("a/{input", "without its"),
            ("a/input}", "without its"),
            ("a/\u{1}", "control"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
