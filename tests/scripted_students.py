"""Students whose next token a test decides: a model's forward wrapped so that a script forces or forbids tokens."""

import torch


def scripted(model, tokenizer, script):
    """`model` with its forward wrapped: the random model's own logits, except where `script(generated, logits)`
    (the row's generated ids so far, and its next-token logits) forces or forbids tokens.

    Generation feeds the forward only the newest token after the prompt, so the wrapper keeps each batch's history.
    """
    forward, state = model.forward, {}

    def scripted_forward(input_ids=None, **kwargs):
        output = forward(input_ids=input_ids, **kwargs)
        if input_ids.shape[1] > 1:  # a new batch: its prompts
            state["history"], state["prompt_length"] = input_ids.clone(), input_ids.shape[1]
        else:
            state["history"] = torch.cat([state["history"], input_ids], dim=1)
        logits = output.logits[:, -1, :].clone()
        for row, generated in enumerate(state["history"][:, state["prompt_length"] :].tolist()):
            script(generated, logits[row])
        output.logits = logits.unsqueeze(1)
        return output

    model.forward = scripted_forward
    return model


def force(logits, token_id):
    logits.fill_(float("-inf"))
    logits[token_id] = 0.0
