//! Every function shape `#[audit]` supports.

use otel_audit::{Sensitive, audit};

#[derive(Debug)]
struct Doc {
    id: u64,
}

struct Service {
    name: String,
}

impl Service {
    #[audit(action = "svc.read", category = data_access, target = ("doc", id))]
    fn read(&self, id: u64) -> Option<&str> {
        Some(&self.name)
    }

    #[audit(action = "svc.rename", category = admin, skip(name))]
    fn rename(&mut self, name: String) {
        self.name = name;
    }

    #[audit(action = "svc.load", category = data_access, ret, err)]
    async fn load(&self, doc: Doc) -> Result<u64, std::io::Error> {
        if doc.id == 0 {
            return Err(std::io::Error::other("no such document"));
        }
        Ok(doc.id)
    }
}

#[audit]
fn defaults(x: i32) -> i32 {
    x + 1
}

#[audit(category = tool, gen_ai.tool.name = "search", gen_ai.tool.call.id = call_id, skip_all)]
fn generic<T: std::fmt::Debug + Clone>(value: T, call_id: &str) -> impl Iterator<Item = T> {
    let _ = call_id;
    std::iter::once(value)
}

#[audit(
    action = "llm.chat",
    category = inference,
    level = warn,
    actor = user,
    fields(conversation.turn = 3, "tenant.plan" = "gold"),
    redact(prompt = "hmac", api_key = "mask(4)", notes = "truncate(10)", blob = "drop"),
    gen_ai.request.model = model,
    gen_ai.request.temperature = 0.2f32,
    gen_ai.usage.input_tokens = prompt.len(),
)]
fn chat(
    user: &str,
    model: String,
    prompt: &str,
    api_key: &str,
    notes: &str,
    blob: Vec<u8>,
    secret: Sensitive<String>,
) -> Result<String, std::fmt::Error> {
    let _ = (blob, secret, api_key, notes);
    Ok(format!("{model}: {}", prompt.len()))
}

#[audit(action = "q", err)]
fn question_mark(s: &str) -> Result<i64, std::num::ParseIntError> {
    let v: i64 = s.parse()?;
    Ok(v * 2)
}

#[audit(action = "aq", err)]
async fn async_question_mark(s: &str) -> Result<i64, std::num::ParseIntError> {
    let v: i64 = s.parse()?;
    Ok(v * 2)
}

fn main() {
    let mut s = Service { name: "a".into() };
    let _ = s.read(1);
    s.rename("b".into());
    let _ = s.load(Doc { id: 1 });
    let _ = defaults(1);
    let _ = generic(5u8, "call-1").count();
    let _ = chat("u", "m".into(), "p", "k", "n", vec![], Sensitive::new("s".into()));
    let _ = question_mark("2");
    let _ = async_question_mark("2");
}
