//! An agent calling tools, audited per tool call (`execute_tool`), with one
//! call denied by policy.
//!
//! `cargo run -p otel-audit --example agent_tools`

#[path = "common.rs"]
mod common;

use otel_audit::{Actor, ActorType, Outcome, audit};

#[derive(Debug, thiserror::Error)]
enum ToolError {
    #[error("tool {0} is not allowed for agent {1}")]
    Denied(String, String),
}

struct Agent {
    name: &'static str,
    allowed: &'static [&'static str],
}

impl Agent {
    fn actor(&self) -> Actor {
        Actor {
            id: Some(format!("agent-{}", self.name)),
            kind: Some(ActorType::Agent),
            role: Some("claims-triage".into()),
            ..Actor::default()
        }
    }

    /// One tool call: the tool's arguments and result are content (HMAC'd).
    #[audit(
        action = "execute_tool",
        category = tool,
        actor = self.actor(),
        skip(self),
        gen_ai.operation.name = "execute_tool",
        gen_ai.agent.name = self.name,
        gen_ai.tool.name = tool,
        gen_ai.tool.call.id = call_id,
        gen_ai.tool.call.arguments = arguments,
    )]
    fn execute_tool(
        &self,
        tool: &str,
        call_id: &str,
        arguments: &str,
    ) -> Result<String, ToolError> {
        if !self.allowed.contains(&tool) {
            otel_audit::current().outcome(Outcome::Denied);
            return Err(ToolError::Denied(tool.into(), self.name.into()));
        }
        let result = match tool {
            "lookup_policy" => format!("policy {arguments}: active, deductible 500"),
            "fetch_claim" => "claim C-1029: water damage, 2 photos".to_owned(),
            _ => "ok".to_owned(),
        };
        otel_audit::current().content("gen_ai.tool.call.result", &result);
        Ok(result)
    }

    /// The agent run: a parent span, so tool calls share its trace.
    #[audit(action = "invoke_agent", category = inference, actor = self.actor(), skip_all,
            gen_ai.operation.name = "invoke_agent", gen_ai.agent.name = self.name)]
    fn run(&self, claim: &str) -> Result<(), ToolError> {
        self.execute_tool(
            "fetch_claim",
            "call-1",
            &format!("{{\"claim\": \"{claim}\"}}"),
        )?;
        self.execute_tool("lookup_policy", "call-2", "{\"policy\": \"P-88\"}")?;
        // Not in the allow-list: denied, and the run fails with it.
        self.execute_tool(
            "issue_payment",
            "call-3",
            "{\"amount\": 12000, \"iban\": \"DE89370400440532013000\"}",
        )?;
        Ok(())
    }
}

fn main() {
    let setup = common::install("agent_tools", "claims-agent");
    let agent = Agent {
        name: "claims-triage",
        allowed: &["fetch_claim", "lookup_policy"],
    };
    if let Err(e) = agent.run("C-1029") {
        eprintln!("agent stopped: {e}");
    }
    setup.finish();
}
