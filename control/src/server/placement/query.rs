//! The cluster query language of `memberOf` constraints: the subset of
//! ECS' language that berth's instances have facts for.
//!
//! # Grammar
//! ```text
//! expr      := and (("or" | "||") and)*
//! and       := unary (("and" | "&&") unary)*
//! unary     := ("not" | "!") unary | "(" expr ")" | predicate
//! predicate := subject operator [argument]
//! subject   := attribute:NAME | instanceId | ec2InstanceId | agentConnected
//!            | agentVersion | runningTasksCount
//! operator  := == | != | > | >= | < | <= | exists | !exists | in | !in | =~ | !~
//!              (and ECS' word forms: equals, not_equals, greater_than, …)
//! argument  := value | "(" value ("," value)* ")" | "[" value ("," value)* "]"
//! value     := a bare word | 'quoted' | "quoted"
//! ```
//! `and` binds tighter than `or`; `not` tighter than both.
//!
//! # Semantics
//! - A comparison is numeric when both sides parse as numbers, by version
//!   (dot-separated numbers, `1.10.0 > 1.9.2`) when both are versions, and
//!   by string otherwise.
//! - An attribute an instance lacks matches `!=`, `!exists`, `!in` and `!~`
//!   and nothing else: each negated operator is the complement of its
//!   positive form.
//! - `=~` matches the whole value (as Java's `matches`, which ECS uses),
//!   with the `regex` crate: linear time, no back-references; patterns are
//!   at most [`MAX_PATTERN_LEN`] characters and compile within
//!   [`REGEX_SIZE_LIMIT`] bytes.
//!
//! # Bounds
//! An expression is at most [`MAX_EXPRESSION_LEN`] characters (ECS' limit)
//! and nests at most [`MAX_DEPTH`] levels of parentheses and `not`, so the
//! recursive parser cannot exhaust the stack. Every error names the column
//! (1-based, in characters) and what was expected there.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// The longest expression accepted, in characters (ECS' limit).
pub const MAX_EXPRESSION_LEN: usize = 2000;
/// The deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;
/// The longest `=~` / `!~` pattern, in characters.
pub const MAX_PATTERN_LEN: usize = 256;
/// The most a compiled pattern may take.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// The most values of an `in` list.
pub const MAX_LIST_LEN: usize = 100;

/// What an instance offers a query.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub instance_id: &'a str,
    pub agent_connected: bool,
    pub agent_version: &'a str,
    pub running_tasks_count: u64,
    pub attributes: &'a BTreeMap<String, String>,
}

/// What a predicate is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Attribute(String),
    InstanceId,
    AgentConnected,
    AgentVersion,
    RunningTasksCount,
}

impl Subject {
    fn value(&self, facts: &Facts<'_>) -> Option<String> {
        match self {
            Subject::Attribute(name) => facts.attributes.get(name).cloned(),
            Subject::InstanceId => Some(facts.instance_id.to_owned()),
            Subject::AgentConnected => Some(facts.agent_connected.to_string()),
            Subject::AgentVersion => Some(facts.agent_version.to_owned()),
            Subject::RunningTasksCount => Some(facts.running_tasks_count.to_string()),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Attribute(n) => write!(f, "attribute:{n}"),
            Subject::InstanceId => f.write_str("instanceId"),
            Subject::AgentConnected => f.write_str("agentConnected"),
            Subject::AgentVersion => f.write_str("agentVersion"),
            Subject::RunningTasksCount => f.write_str("runningTasksCount"),
        }
    }
}

/// An operator with its argument.
#[derive(Debug, Clone)]
pub enum Test {
    Eq(String),
    Ne(String),
    Gt(String),
    Ge(String),
    Lt(String),
    Le(String),
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
    Matches(Box<regex::Regex>),
    NotMatches(Box<regex::Regex>),
}

/// The parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Pred(Subject, Test),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    fn eval(&self, facts: &Facts<'_>) -> bool {
        match self {
            Expr::Not(e) => !e.eval(facts),
            Expr::And(a, b) => a.eval(facts) && b.eval(facts),
            Expr::Or(a, b) => a.eval(facts) || b.eval(facts),
            Expr::Pred(subject, test) => {
                let v = subject.value(facts);
                let v = v.as_deref();
                let cmp =
                    |rhs: &str, ok: fn(Ordering) -> bool| v.is_some_and(|v| ok(compare(v, rhs)));
                match test {
                    Test::Eq(x) => cmp(x, Ordering::is_eq),
                    Test::Ne(x) => !cmp(x, Ordering::is_eq),
                    Test::Gt(x) => cmp(x, Ordering::is_gt),
                    Test::Ge(x) => cmp(x, Ordering::is_ge),
                    Test::Lt(x) => cmp(x, Ordering::is_lt),
                    Test::Le(x) => cmp(x, Ordering::is_le),
                    Test::Exists => v.is_some(),
                    Test::NotExists => v.is_none(),
                    Test::In(xs) => xs.iter().any(|x| cmp(x, Ordering::is_eq)),
                    Test::NotIn(xs) => !xs.iter().any(|x| cmp(x, Ordering::is_eq)),
                    Test::Matches(re) => v.is_some_and(|v| re.is_match(v)),
                    Test::NotMatches(re) => !v.is_some_and(|v| re.is_match(v)),
                }
            }
        }
    }
}

/// Numbers numerically, versions by their parts, anything else as strings.
pub fn compare(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>())
        && x.is_finite()
        && y.is_finite()
    {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    let version = |s: &str| -> Option<Vec<u64>> {
        let s = s.trim().strip_prefix('v').unwrap_or(s.trim());
        s.split('.').map(|p| p.parse::<u64>().ok()).collect()
    };
    if let (Some(x), Some(y)) = (version(a), version(b)) {
        return x.cmp(&y);
    }
    a.cmp(b)
}

/// A parsed `memberOf` expression; shows as its source.
#[derive(Debug, Clone)]
pub struct Query {
    source: String,
    expr: Expr,
}

impl Query {
    /// Parses `source` (see the module docs).
    pub fn parse(source: &str) -> Result<Self, QueryError> {
        let chars: Vec<char> = source.chars().collect();
        if chars.len() > MAX_EXPRESSION_LEN {
            return Err(QueryError {
                column: MAX_EXPRESSION_LEN + 1,
                message: format!(
                    "the expression is {} characters long; at most {MAX_EXPRESSION_LEN} are allowed",
                    chars.len()
                ),
            });
        }
        let mut p = Parser { s: &chars, pos: 0 };
        p.skip_ws();
        if p.at_end() {
            return Err(p.err("expected an expression (for example attribute:zone == a)"));
        }
        let expr = p.expr(0)?;
        p.skip_ws();
        if !p.at_end() {
            return Err(p.err(&format!(
                "expected and, or or the end of the expression, found {}",
                p.found()
            )));
        }
        Ok(Self {
            source: source.trim().to_owned(),
            expr,
        })
    }

    /// Whether an instance with `facts` is a member.
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        self.expr.eval(facts)
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The expression as written (trimmed).
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Query {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Query {}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Query {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Why an expression does not parse: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct QueryError {
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

struct Parser<'a> {
    s: &'a [char],
    pos: usize,
}

/// Characters that end a bare word.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ',' | '\'' | '"')
}

/// Characters of an attribute name (SPEC §6).
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':')
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn err(&self, message: &str) -> QueryError {
        QueryError {
            column: self.pos + 1,
            message: message.to_owned(),
        }
    }

    /// What is at the current position, for messages.
    fn found(&self) -> String {
        if self.at_end() {
            return "the end of the expression".to_owned();
        }
        let word: String = self.s[self.pos..]
            .iter()
            .take_while(|c| !c.is_whitespace())
            .take(20)
            .collect();
        format!("{word:?}")
    }

    fn starts_with(&self, lit: &str) -> bool {
        (self.pos..)
            .zip(lit.chars())
            .all(|(i, c)| self.s.get(i) == Some(&c))
    }

    /// `lit` as a whole word (not followed by a name character).
    fn keyword(&self, lit: &str) -> bool {
        self.starts_with(lit)
            && self
                .s
                .get(self.pos + lit.chars().count())
                .is_none_or(|c| !name_char(*c))
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.starts_with(lit) {
            self.pos += lit.chars().count();
            true
        } else {
            false
        }
    }

    fn eat_keyword(&mut self, lit: &str) -> bool {
        if self.keyword(lit) {
            self.pos += lit.chars().count();
            true
        } else {
            false
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, QueryError> {
        let mut left = self.and(depth)?;
        loop {
            self.skip_ws();
            if self.eat("||") || self.eat_keyword("or") {
                let right = self.and(depth)?;
                left = Expr::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn and(&mut self, depth: usize) -> Result<Expr, QueryError> {
        let mut left = self.unary(depth)?;
        loop {
            self.skip_ws();
            if self.eat("&&") || self.eat_keyword("and") {
                let right = self.unary(depth)?;
                left = Expr::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, QueryError> {
        self.skip_ws();
        if depth >= MAX_DEPTH {
            return Err(self.err(&format!(
                "the expression nests deeper than {MAX_DEPTH} levels of parentheses and not"
            )));
        }
        if self.eat_keyword("not") || (self.peek() == Some('!') && self.eat("!")) {
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.eat("(") {
            let inner = self.expr(depth + 1)?;
            self.skip_ws();
            if !self.eat(")") {
                return Err(self.err(&format!(
                    "expected \")\" to close the parenthesis, found {}",
                    self.found()
                )));
            }
            return Ok(inner);
        }
        if self.at_end() {
            return Err(self.err(
                "expected a subject (attribute:NAME, instanceId, agentConnected, agentVersion or runningTasksCount), not, or \"(\"",
            ));
        }
        let subject = self.subject()?;
        let test = self.test()?;
        Ok(Expr::Pred(subject, test))
    }

    fn subject(&mut self) -> Result<Subject, QueryError> {
        if self.eat("attribute:") {
            let start = self.pos;
            while self.peek().is_some_and(name_char) {
                self.pos += 1;
            }
            let len = self.pos - start;
            if len == 0 {
                return Err(self.err(
                    "expected an attribute name (1-128 characters of A-Z a-z 0-9 _ . - / :) after \"attribute:\"",
                ));
            }
            if len > 128 {
                self.pos = start;
                return Err(self.err("an attribute name is at most 128 characters"));
            }
            return Ok(Subject::Attribute(self.s[start..self.pos].iter().collect()));
        }
        for (word, subject) in [
            ("instanceId", Subject::InstanceId),
            ("ec2InstanceId", Subject::InstanceId),
            ("agentConnected", Subject::AgentConnected),
            ("agentVersion", Subject::AgentVersion),
            ("runningTasksCount", Subject::RunningTasksCount),
        ] {
            if self.eat_keyword(word) {
                return Ok(subject);
            }
        }
        Err(self.err(&format!(
            "expected a subject (attribute:NAME, instanceId, agentConnected, agentVersion or runningTasksCount), found {}",
            self.found()
        )))
    }

    fn test(&mut self) -> Result<Test, QueryError> {
        self.skip_ws();
        // Longest first: `!exists` before `!=`… and `>=` before `>`.
        const SYMBOLS: &[&str] = &[
            "==", "!=", ">=", "<=", ">", "<", "!exists", "!in", "=~", "!~",
        ];
        const WORDS: &[(&str, &str)] = &[
            ("equals", "=="),
            ("not_equals", "!="),
            ("greater_than_equal", ">="),
            ("greater_than", ">"),
            ("less_than_equal", "<="),
            ("less_than", "<"),
            ("not_exists", "!exists"),
            ("exists", "exists"),
            ("not_in", "!in"),
            ("in", "in"),
            ("not_matches", "!~"),
            ("matches", "=~"),
        ];
        let mut op = None;
        for sym in SYMBOLS {
            let word_op = sym.starts_with("!e") || sym.starts_with("!i");
            if (word_op && self.keyword(sym)) || (!word_op && self.starts_with(sym)) {
                self.pos += sym.chars().count();
                op = Some(*sym);
                break;
            }
        }
        if op.is_none() {
            for (word, sym) in WORDS {
                if self.eat_keyword(word) {
                    op = Some(*sym);
                    break;
                }
            }
        }
        let Some(op) = op else {
            return Err(self.err(&format!(
                "expected an operator (== != > >= < <= exists !exists in !in =~ !~), found {}",
                self.found()
            )));
        };
        Ok(match op {
            "exists" => Test::Exists,
            "!exists" => Test::NotExists,
            "in" => Test::In(self.list(op)?),
            "!in" => Test::NotIn(self.list(op)?),
            "=~" => Test::Matches(Box::new(self.pattern(op)?)),
            "!~" => Test::NotMatches(Box::new(self.pattern(op)?)),
            _ => {
                let v = self.value(op)?;
                match op {
                    "==" => Test::Eq(v),
                    "!=" => Test::Ne(v),
                    ">" => Test::Gt(v),
                    ">=" => Test::Ge(v),
                    "<" => Test::Lt(v),
                    _ => Test::Le(v),
                }
            }
        })
    }

    /// A bare word or a quoted string after `op`.
    fn value(&mut self, op: &str) -> Result<String, QueryError> {
        self.skip_ws();
        match self.peek() {
            Some(q @ ('\'' | '"')) => {
                let open = self.pos;
                self.pos += 1;
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c == q {
                        let v: String = self.s[start..self.pos].iter().collect();
                        self.pos += 1;
                        return Ok(v);
                    }
                    self.pos += 1;
                }
                self.pos = open;
                Err(self.err(&format!("the quote {q} is not closed")))
            }
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if ends_word(c) || self.starts_with("&&") || self.starts_with("||") {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(self.err(&format!("expected a value after {op:?}")));
                }
                Ok(self.s[start..self.pos].iter().collect())
            }
        }
    }

    fn list(&mut self, op: &str) -> Result<Vec<String>, QueryError> {
        self.skip_ws();
        let close = if self.eat("(") {
            ')'
        } else if self.eat("[") {
            ']'
        } else {
            return Err(self.err(&format!(
                "expected a list after {op:?}, for example (a, b) or [a, b]"
            )));
        };
        let mut out = Vec::new();
        loop {
            if out.len() >= MAX_LIST_LEN {
                return Err(self.err(&format!("a list holds at most {MAX_LIST_LEN} values")));
            }
            out.push(self.value(op)?);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(out);
            }
            return Err(self.err(&format!(
                "expected \",\" or {:?} in the list after {op:?}, found {}",
                close.to_string(),
                self.found()
            )));
        }
    }

    fn pattern(&mut self, op: &str) -> Result<regex::Regex, QueryError> {
        self.skip_ws();
        let start = self.pos;
        let p = self.value(op)?;
        if p.chars().count() > MAX_PATTERN_LEN {
            self.pos = start;
            return Err(self.err(&format!(
                "a pattern is at most {MAX_PATTERN_LEN} characters"
            )));
        }
        regex::RegexBuilder::new(&format!("^(?:{p})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(MAX_DEPTH as u32)
            .build()
            .map_err(|e| {
                let first = e.to_string();
                let first = first.lines().last().unwrap_or("").trim().to_owned();
                QueryError {
                    column: start + 1,
                    message: format!(
                        "the pattern after {op:?} is not a valid regular expression: {first}"
                    ),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check(q: &str, a: &BTreeMap<String, String>) -> bool {
        let facts = Facts {
            instance_id: "i-abc",
            agent_connected: true,
            agent_version: "1.10.2",
            running_tasks_count: 3,
            attributes: a,
        };
        Query::parse(q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .matches(&facts)
    }

    #[test]
    fn every_operator() {
        let a = attrs(&[
            ("zone", "rack-3"),
            ("cores", "16"),
            ("ecs.os-type", "linux"),
        ]);
        for (q, want) in [
            ("attribute:zone == rack-3", true),
            ("attribute:zone == 'rack-3'", true),
            ("attribute:zone == \"rack-4\"", false),
            ("attribute:zone equals rack-3", true),
            ("attribute:zone != rack-3", false),
            ("attribute:missing != rack-3", true),
            ("attribute:missing == rack-3", false),
            ("attribute:cores > 9", true), // numeric, not "16" < "9"
            ("attribute:cores >= 16", true),
            ("attribute:cores < 16", false),
            ("attribute:cores <= 16.0", true),
            ("attribute:zone > rack-2", true), // strings
            ("attribute:zone exists", true),
            ("attribute:missing exists", false),
            ("attribute:missing !exists", true),
            ("attribute:zone not_exists", false),
            ("attribute:zone in (rack-1, rack-3)", true),
            ("attribute:zone in [rack-1, 'rack-2']", false),
            ("attribute:zone !in (rack-1, rack-3)", false),
            ("attribute:missing !in (rack-1)", true),
            ("attribute:zone =~ rack-.*", true),
            ("attribute:zone =~ rack", false), // whole value
            ("attribute:zone !~ 'r.ck-[0-9]'", false),
            ("attribute:missing !~ x", true),
            ("attribute:missing =~ '.*'", false),
            ("instanceId == i-abc", true),
            ("ec2InstanceId in (i-x, i-abc)", true),
            ("agentConnected == true", true),
            ("agentVersion >= 1.9.9", true), // by version parts
            ("agentVersion < 1.10.10", true),
            ("runningTasksCount < 4", true),
            ("runningTasksCount == 3", true),
            ("attribute:ecs.os-type == linux", true),
        ] {
            assert_eq!(check(q, &a), want, "{q}");
        }
    }

    #[test]
    fn combinations_and_precedence() {
        let a = attrs(&[("zone", "a"), ("disk", "ssd")]);
        for (q, want) in [
            // and binds tighter: true or (false and false)
            (
                "attribute:zone == a or attribute:zone == b and attribute:disk == hdd",
                true,
            ),
            // (true or false) and false
            (
                "(attribute:zone == a or attribute:zone == b) and attribute:disk == hdd",
                false,
            ),
            ("attribute:zone == a && attribute:disk == ssd", true),
            ("attribute:zone == b || attribute:disk == ssd", true),
            ("not attribute:zone == a", false),
            ("!attribute:zone == a", false),
            ("!(attribute:zone == b)", true),
            ("not not attribute:zone == a", true),
            ("not attribute:zone == b and attribute:disk == ssd", true),
            ("attribute:zone==a&&attribute:disk==ssd", true),
            ("((attribute:zone == a))", true),
        ] {
            assert_eq!(check(q, &a), want, "{q}");
        }
    }

    fn err(q: &str) -> String {
        Query::parse(q).map(|_| ()).expect_err(q).to_string()
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        assert_eq!(
            err("attribute:zone =="),
            "column 18: expected a value after \"==\""
        );
        assert_eq!(
            err("attribute:zone == a and"),
            "column 24: expected a subject (attribute:NAME, instanceId, agentConnected, agentVersion or runningTasksCount), not, or \"(\""
        );
        assert_eq!(
            err("attribute:zone ~= a"),
            "column 16: expected an operator (== != > >= < <= exists !exists in !in =~ !~), found \"~=\""
        );
        assert_eq!(
            err("zone == a"),
            "column 1: expected a subject (attribute:NAME, instanceId, agentConnected, agentVersion or runningTasksCount), found \"zone\""
        );
        assert_eq!(
            err("(attribute:zone == a"),
            "column 21: expected \")\" to close the parenthesis, found the end of the expression"
        );
        assert_eq!(
            err("attribute:zone == a b"),
            "column 21: expected and, or or the end of the expression, found \"b\""
        );
        assert_eq!(
            err("attribute:zone in a"),
            "column 19: expected a list after \"in\", for example (a, b) or [a, b]"
        );
        assert_eq!(
            err("attribute:zone in (a b)"),
            "column 22: expected \",\" or \")\" in the list after \"in\", found \"b)\""
        );
        assert_eq!(
            err("attribute:zone == 'a"),
            "column 19: the quote ' is not closed"
        );
        assert!(
            err("attribute:zone =~ '(('").starts_with(
                "column 19: the pattern after \"=~\" is not a valid regular expression"
            )
        );
        assert_eq!(
            err("   "),
            "column 4: expected an expression (for example attribute:zone == a)"
        );
        assert!(err("attribute: == a").starts_with("column 11: expected an attribute name"));
    }

    #[test]
    fn too_long_and_too_deep_are_refused() {
        let long = format!("attribute:zone == {}", "a".repeat(MAX_EXPRESSION_LEN));
        assert!(err(&long).contains("at most 2000 are allowed"));
        let deep = format!("{}attribute:zone == a{}", "(".repeat(40), ")".repeat(40));
        assert!(
            err(&deep).contains("nests deeper than 32"),
            "{}",
            err(&deep)
        );
        let nots = format!("{}attribute:zone == a", "not ".repeat(40));
        assert!(err(&nots).contains("nests deeper"));
        let ok = format!("{}attribute:zone == a{}", "(".repeat(20), ")".repeat(20));
        assert!(Query::parse(&ok).is_ok());
        let pattern = format!("attribute:zone =~ {}", "a".repeat(MAX_PATTERN_LEN + 1));
        assert_eq!(
            err(&pattern),
            "column 19: a pattern is at most 256 characters"
        );
        // a pattern that compiles too big
        assert!(
            err("attribute:zone =~ '(\\w{100}){100}'").contains("not a valid regular expression")
        );
    }

    #[test]
    fn display_is_the_source() {
        let q = Query::parse("  attribute:zone == a   and instanceId != i-1 ").expect("parses");
        assert_eq!(q.to_string(), "attribute:zone == a   and instanceId != i-1");
    }

    #[test]
    fn a_value_may_look_like_a_keyword() {
        let a = attrs(&[("mode", "and")]);
        assert!(check("attribute:mode == and", &a));
        assert!(check("attribute:mode in (or, and)", &a));
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(s in "\\PC{0,80}") {
            let _ = Query::parse(&s);
        }

        #[test]
        fn the_parser_never_panics_on_query_like_input(
            parts in proptest::collection::vec(prop_oneof![
                Just("attribute:zone"), Just("instanceId"), Just("=="), Just("!="), Just(">="),
                Just("in"), Just("!in"), Just("exists"), Just("!exists"), Just("=~"), Just("!~"),
                Just("("), Just(")"), Just("["), Just("]"), Just(","), Just("and"), Just("or"),
                Just("not"), Just("!"), Just("&&"), Just("||"), Just("a"), Just("'q'"), Just("\""),
                Just("1.5"), Just("*"), Just(" "),
            ], 0..40)
        ) {
            let s: String = parts.concat();
            if let Ok(q) = Query::parse(&s) {
                let a = attrs(&[("zone", "a")]);
                let facts = Facts { instance_id: "i", agent_connected: true, agent_version: "1", running_tasks_count: 0, attributes: &a };
                let _ = q.matches(&facts);
                // what parses once parses again from its Display
                prop_assert!(Query::parse(&q.to_string()).is_ok());
            } else if let Err(e) = Query::parse(&s) {
                prop_assert!(e.column >= 1 && e.column <= s.chars().count() + 1);
            }
        }
    }
}
