/**
 * LogitsPipe: FlashInfer's composable sampling pipeline.
 *
 * ```ts
 * const pipe = new LogitsPipe([Temperature(), Softmax(), TopK(), TopP(), Sample()]);
 * const tokens = pipe.run(logits, { temperature: 0.7, topK: 50, topP: 0.9 });
 * ```
 * The steps are checked when the pipe is built (each step must accept the previous one's output:
 * Temperature and Softmax take logits, TopP and MinP take probabilities, Sample comes last). A pipe
 * that ends in Sample runs as ONE fused kernel: the temperature, the softmax and every filter are
 * applied on the fly to the row while the pivot search and the draw read it. TopK then TopP means
 * top-p on the renormalized top-k set ("top_k_first"); TopP then TopK is their intersection; MinP
 * must be the last filter. Pipes that end in probabilities or logits run one kernel per step.
 */
import { invalid } from "../runtime/errors.ts";
import type { Tensor } from "../runtime/tensor.ts";
import { Filter, SamplingOp } from "./params.ts";
import {
  type Filters,
  type LogitsSamplingOptions,
  type RowParam,
  runRowOp,
  runSampler,
  type SamplingOptions,
} from "./sampling.ts";

export type StepName = "Temperature" | "Softmax" | "TopK" | "TopP" | "MinP" | "Sample";
export interface Step {
  readonly name: StepName;
}
export type TensorKind = "logits" | "probs";

export const Temperature = (): Step => ({ name: "Temperature" });
export const Softmax = (): Step => ({ name: "Softmax" });
export const TopK = (): Step => ({ name: "TopK" });
export const TopP = (): Step => ({ name: "TopP" });
export const MinP = (): Step => ({ name: "MinP" });
export const Sample = (): Step => ({ name: "Sample" });

export interface PipeRunOptions extends SamplingOptions {
  temperature?: RowParam;
  topK?: RowParam;
  topP?: RowParam;
  minP?: RowParam;
}

/** What a step accepts and what it produces (undefined: the step refuses that input). */
const TRANSITIONS: Record<StepName, Partial<Record<TensorKind, TensorKind | "tokens">>> = {
  Temperature: { logits: "logits" },
  Softmax: { logits: "probs" },
  TopK: { logits: "logits", probs: "probs" },
  TopP: { probs: "probs" },
  MinP: { probs: "probs" },
  Sample: { logits: "tokens", probs: "tokens" },
};

const OP = "build a LogitsPipe";

export class LogitsPipe {
  readonly steps: readonly Step[];
  readonly inputType: TensorKind;
  readonly outputType: TensorKind | "tokens";

  constructor(steps: Step[], options: { inputType?: TensorKind } = {}) {
    if (!Array.isArray(steps) || steps.length === 0) invalid(OP, "steps", "a non-empty array of steps", steps);
    const inputType = options.inputType ?? "logits";
    if (inputType !== "logits" && inputType !== "probs") invalid(OP, "inputType", '"logits" or "probs"', inputType);
    let kind: TensorKind | "tokens" = inputType;
    const seen = new Set<StepName>();
    steps.forEach((s, i) => {
      const name = s?.name;
      if (!(name in TRANSITIONS)) {
        invalid(OP, `steps[${i}]`, "one of Temperature(), Softmax(), TopK(), TopP(), MinP(), Sample()", s);
      }
      if (kind === "tokens") invalid(OP, `steps[${i}]`, "absent: Sample() must be the last step", name);
      const next = TRANSITIONS[name][kind];
      if (next === undefined) {
        const wants = Object.keys(TRANSITIONS[name]).join(" or ");
        invalid(OP, `steps[${i}]`, `given ${wants}, but ${name} follows a step that yields ${kind}`, name);
      }
      if (seen.has(name)) invalid(OP, `steps[${i}]`, `the only ${name} step`, name);
      if (seen.has("MinP") && (name === "TopK" || name === "TopP")) {
        invalid(OP, `steps[${i}]`, "before MinP (MinP must be the last filter)", name);
      }
      seen.add(name);
      kind = next;
    });
    if (seen.has("MinP") && (kind as string) !== "tokens") {
      invalid(
        OP,
        "steps",
        "ending in Sample() when MinP is used",
        steps.map((s) => s.name),
      );
    }
    if (seen.has("Temperature") && !seen.has("Softmax") && !seen.has("Sample")) {
      invalid(OP, "steps", "followed by Softmax() or Sample() when Temperature() is used", steps.map((s) => s.name));
    }
    this.steps = Object.freeze([...steps]);
    this.inputType = inputType;
    this.outputType = kind;
  }

  /** The kernels this pipe launches, for inspection (e.g. ["fused sample"]). */
  get plan(): string[] {
    if (this.outputType === "tokens") return ["fused sample"];
    return this.rowSteps().map((s) => s.kernel);
  }

  private has(name: StepName): boolean {
    return this.steps.some((s) => s.name === name);
  }

  private rowSteps(): { kernel: string; step: StepName; kind: TensorKind }[] {
    const out: { kernel: string; step: StepName; kind: TensorKind }[] = [];
    let kind: TensorKind = this.inputType;
    for (const s of this.steps) {
      if (s.name === "Temperature") continue; // folded into the softmax
      const kernel = s.name === "Softmax"
        ? "softmax"
        : s.name === "TopK"
        ? (kind === "logits" ? "topKMaskLogits" : "topKRenormProbs")
        : "topPRenormProbs";
      out.push({ kernel, step: s.name, kind });
      kind = TRANSITIONS[s.name][kind] as TensorKind;
    }
    return out;
  }

  private need(name: StepName, arg: keyof PipeRunOptions, options: PipeRunOptions): RowParam {
    const v = options[arg];
    if (v === undefined) invalid("run a LogitsPipe", arg, `given, as the pipe has ${name}()`, v);
    return v as RowParam;
  }

  /** Runs the pipe: tokens (i32 [batch]) when it ends in Sample, else the transformed rows (f32). */
  run(input: Tensor, options: PipeRunOptions = {}): Tensor {
    const op = "run a LogitsPipe";
    const temperature = this.has("Temperature") ? this.need("Temperature", "temperature", options) : undefined;
    if (this.outputType === "tokens") {
      const filters: Filters = {};
      if (this.has("TopK")) filters.topK = this.need("TopK", "topK", options);
      if (this.has("TopP")) filters.topP = this.need("TopP", "topP", options);
      if (this.has("MinP")) filters.minP = this.need("MinP", "minP", options);
      const ik = this.steps.findIndex((s) => s.name === "TopK"), ip = this.steps.findIndex((s) => s.name === "TopP");
      filters.order = ik >= 0 && ip >= 0 && ip < ik ? "joint" : "top_k_first";
      const opts: LogitsSamplingOptions = { ...options, temperature };
      return runSampler(op, input, this.inputType === "logits", filters, opts);
    }
    let x = input;
    const temps: Tensor[] = [];
    try {
      for (const s of this.rowSteps()) {
        let y: Tensor;
        if (s.step === "Softmax") {
          y = runRowOp(op, "input", x, SamplingOp.softmax, true, 0, undefined, { temperature, stream: options.stream });
        } else if (s.step === "TopK") {
          const k = { kind: "k" as const, arg: "topK", value: this.need("TopK", "topK", options) };
          y = s.kind === "logits"
            ? runRowOp(op, "input", x, SamplingOp.mask, true, Filter.topK, k, { stream: options.stream })
            : runRowOp(op, "input", x, SamplingOp.renorm, false, Filter.topK, k, { stream: options.stream });
        } else {
          const p = { kind: "p" as const, arg: "topP", value: this.need("TopP", "topP", options) };
          y = runRowOp(op, "input", x, SamplingOp.renorm, false, Filter.topP, p, { stream: options.stream });
        }
        if (x !== input) temps.push(x);
        x = y;
      }
      return x;
    } finally {
      temps.forEach((t) => t.dispose());
    }
  }
}
