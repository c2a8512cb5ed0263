// A fused forward of a dense decoder-only transformer (Llama, Gemma 3 and the
// like): every layer of a batch of token chunks in one call, all threads of
// the pool working through it together with spin barriers between the steps.
// This removes the per-operator overhead that dominates a small model's decode.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "matmul.h"
#include "moe.h"
#include "vector_ops.h"

namespace kt {

struct WeightRef {
    const uint8_t* data = nullptr;  // GGUF blocks, [rows, row_bytes]
    int type = -1;
    int rows = 0, cols = 0;
};

enum class Activation : int { silu = 0, gelu_tanh = 1 };

struct RopeSpec {
    int dim = 0;          // leading dimensions of each head that rotate
    double base = 10000;  // frequency base
    double scale = 1;     // positions are multiplied by this (linear scaling)
    bool neox = false;    // rotate (x[i], x[i + dim/2]) pairs; else adjacent pairs (llama.cpp NORM)
};

struct DecoderLayer {
    const float* attn_norm = nullptr;
    WeightRef q, k, v, o;
    const float* q_norm = nullptr;          // per-head RMSNorm of q and k (Gemma 3), optional
    const float* k_norm = nullptr;
    const float* post_attn_norm = nullptr;  // RMSNorm of the attention output (Gemma), optional
    const float* ffn_norm = nullptr;
    WeightRef gate, up, down;
    const float* post_ffn_norm = nullptr;   // RMSNorm of the MLP output (Gemma), optional
    // A mixture-of-experts MLP instead of gate/up/down (top_k > 0): softmax over the router's
    // scores, the top_k experts with their weights renormalised (Qwen3-MoE).
    int top_k = 0;
    WeightRef router;
    StackedWeights gate_exps{}, up_exps{}, down_exps{};
    int rope = 0;                           // index into DecoderConfig::ropes
    int window = 0;                         // sliding-window attention span, 0 = full
};

struct DecoderConfig {
    int dim = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, ffn_dim = 0, vocab = 0;
    float norm_eps = 1e-5f, attn_scale = 1.f, embed_scale = 1.f;
    Activation act = Activation::silu;
    std::vector<RopeSpec> ropes;
};

// One sequence's keys and values, f16, per layer: keys transposed [n_kv_heads, head_dim,
// capacity] (a tile of consecutive keys is one load), values [capacity, n_kv_heads * head_dim].
// The capacity keeps 16 spare keys past the length: attention reads whole 16-key tiles.
class KVSequence {
public:
    KVSequence(int n_layers, int n_kv_heads, int head_dim)
        : n_kv_heads_(n_kv_heads), head_dim_(head_dim), k_(n_layers), v_(n_layers) {}
    int length() const { return length_; }
    void set_length(int n);  // drop tokens past n (n <= length)
    int capacity() const { return capacity_; }
    int row() const { return n_kv_heads_ * head_dim_; }
    void reserve(int tokens);
    uint16_t* kt(int layer) { return k_[layer].data(); }  // dimension d of key j of head h: [(h * head_dim + d) * capacity + j]
    uint16_t* v(int layer) { return v_[layer].data(); }
    void advance(int n) { length_ += n; }

private:
    int n_kv_heads_, head_dim_, length_ = 0, capacity_ = 0;
    std::vector<std::vector<uint16_t>> k_, v_;
};

struct SequenceChunk {
    KVSequence* seq;
    int n_tokens;  // continue the sequence at position seq->length()
};

class DenseDecoder {
public:
    DenseDecoder(DecoderConfig config, std::vector<DecoderLayer> layers, const float* final_norm, WeightRef lm_head);
    ~DenseDecoder();
    const DecoderConfig& config() const { return c_; }
    int n_layers() const { return int(layers_.size()); }

    // embeddings [T, dim] (T = sum of chunk sizes, unscaled) -> logits [out_rows.size(), vocab]
    // of the rows out_rows; every chunk's keys and values are appended to its sequence.
    void forward(const float* embeddings, const std::vector<SequenceChunk>& chunks,
                 const std::vector<int>& out_rows, float* logits, Isa isa, ThreadPool& pool);

private:
    struct Buffers;
    void run_thread(Buffers& b, const std::vector<SequenceChunk>& chunks, const std::vector<int>& out_rows,
                    float* logits, Isa isa, int tid, int nth);

    DecoderConfig c_;
    std::vector<DecoderLayer> layers_;
    const float* final_norm_;
    WeightRef lm_head_;
    std::mutex mu_;  // one forward at a time: the buffers are shared
    std::unique_ptr<Buffers> buffers_;
};

}  // namespace kt
