defmodule FLAMEK8sBackend.DocsLinksTest do
  # What ExDoc would check when it builds the docs (it is not a dependency of this project):
  # every relative link in the Markdown docs reaches a file (and a heading, given an anchor),
  # every guide a moduledoc links to is an extra, and every module or function named in
  # backticks exists. Anchors must be the same in ExDoc's HTML and on GitHub, where the same
  # Markdown is read.
  use ExUnit.Case, async: true

  @moduletag :unit

  @root Path.expand("../..", __DIR__)
  # Links to files that are not docs go to the repository, so that they work on hexdocs too.
  @repo_url "https://github.com/flame-k8s/flame_k8s_backend/"

  defp markdown_files do
    ["README.md", "CONTRIBUTING.md"] ++
      (Path.wildcard(Path.join(@root, "guides/*.md")) |> Enum.map(&Path.relative_to(&1, @root)))
  end

  defp extras, do: Mix.Project.config()[:docs][:extras] |> Enum.map(&extra_path/1)
  defp extra_path({path, _opts}), do: to_string(path)
  defp extra_path(path), do: to_string(path)

  defp read(relative), do: File.read!(Path.join(@root, relative))

  # Fenced code blocks are not Markdown; inline code spans hold no links.
  defp prose(text) do
    text
    |> String.replace(~r/^\s*```.*?^\s*```[^\n]*$/ms, "")
    |> String.replace(~r/`[^`\n]*`/, "")
  end

  defp links(text) do
    ~r/\[[^\]]*\]\(([^)\s]+)\)/
    |> Regex.scan(prose(text), capture: :all_but_first)
    |> List.flatten()
  end

  defp code_spans(text) do
    text
    |> String.replace(~r/^\s*```.*?^\s*```[^\n]*$/ms, "")
    |> then(&Regex.scan(~r/`([^`\n]+)`/, &1, capture: :all_but_first))
    |> List.flatten()
  end

  # A heading's anchor in ExDoc (ExDoc.Utils.text_to_id/1) and on GitHub.
  defp anchors(markdown) do
    markdown
    |> String.replace(~r/^\s*```.*?^\s*```[^\n]*$/ms, "")
    |> then(&Regex.scan(~r/^\#{1,6}\s+(.+?)\s*$/m, &1, capture: :all_but_first))
    |> List.flatten()
    |> Enum.map(fn heading ->
      text =
        heading |> String.replace("`", "") |> String.replace(~r/\[([^\]]*)\]\([^)]*\)/, "\\1")

      exdoc =
        text |> String.replace(~r/\W+/u, "-") |> String.trim("-") |> String.downcase()

      github =
        text
        |> String.downcase()
        |> String.replace(~r/[^\p{L}\p{N}\s_-]/u, "")
        |> String.replace(" ", "-")

      {exdoc, github}
    end)
  end

  defp anchor_problem(file, anchor) do
    found = anchors(read(file))

    cond do
      {anchor, anchor} in found ->
        nil

      Enum.any?(found, fn {exdoc, github} -> anchor in [exdoc, github] end) ->
        "##{anchor} in #{file} is the anchor in only one of ExDoc and GitHub: rename the heading"

      true ->
        "#{file} has no heading with the anchor ##{anchor}"
    end
  end

  # A link written in `from` (a file relative to the root, or :moduledoc): nil when it resolves.
  defp link_problem(from, link) do
    {path, anchor} =
      case String.split(link, "#", parts: 2) do
        [path, anchor] -> {path, anchor}
        [path] -> {path, nil}
      end

    cond do
      String.starts_with?(link, @repo_url) ->
        case Regex.run(
               ~r{^(?:blob|tree)/main/([^#]+)$},
               String.replace_prefix(path, @repo_url, "")
             ) do
          [_, file] ->
            if File.exists?(Path.join(@root, file)), do: nil, else: "#{link}: no #{file} here"

          nil ->
            "#{link}: link to a file on the main branch (blob/main/... or tree/main/...)"
        end

      link =~ ~r{^[a-z][a-z0-9+.-]*:}i ->
        nil

      from == :moduledoc ->
        extra = Enum.find(extras(), &(Path.basename(&1) == path))

        cond do
          extra == nil -> "#{link}: not one of the docs' extras in mix.exs"
          anchor -> anchor_problem(extra, anchor)
          true -> nil
        end

      path == "" ->
        anchor_problem(from, anchor)

      true ->
        target = Path.join(Path.dirname(from), path) |> Path.expand(@root)
        relative = Path.relative_to(target, @root)

        cond do
          not File.exists?(target) -> "#{link}: no #{relative}"
          anchor && Path.extname(target) == ".md" -> anchor_problem(relative, anchor)
          true -> nil
        end
    end
  end

  defp moduledoc_texts do
    {:ok, modules} = :application.get_key(:flame_k8s_backend, :modules)

    for module <- modules,
        {:docs_v1, _, _, _, moduledoc, _, docs} <- [Code.fetch_docs(module)],
        %{"en" => text} <- [moduledoc | Enum.map(docs, &elem(&1, 3))] do
      {module, text}
    end
  end

  # What a code span names: `FLAMEK8sBackend.X`, `%FLAMEK8sBackend.X{}`,
  # `FLAMEK8sBackend.X.fun/2`, `t:FLAMEK8sBackend.X.type/0`.
  defp reference_problems(span) do
    ~r/(t:|c:)?\b(FLAMEK8sBackend(?:\.[A-Z]\w*)*)(?:\.([a-z_]\w*[?!]?)\/(\d+))?/
    |> Regex.scan(span)
    |> Enum.flat_map(fn match ->
      [_whole, prefix, module_name | rest] = match ++ List.duplicate("", 5 - length(match))
      module = Module.concat([module_name])

      cond do
        not Code.ensure_loaded?(module) ->
          ["`#{span}`: no module #{module_name}"]

        hidden?(module) ->
          ["`#{span}`: #{module_name} is internal (@moduledoc false): the docs cannot link it"]

        rest == ["", ""] ->
          []

        true ->
          [fun, arity] = rest
          {fun, arity} = {String.to_atom(fun), String.to_integer(arity)}

          exists =
            case prefix do
              "t:" -> type_exported?(module, fun, arity)
              "c:" -> true
              "" -> function_exported?(module, fun, arity) or macro_exported?(module, fun, arity)
            end

          if exists, do: [], else: ["`#{span}`: no #{prefix}#{inspect(module)}.#{fun}/#{arity}"]
      end
    end)
  end

  defp hidden?(module), do: match?({:docs_v1, _, _, _, :hidden, _, _}, Code.fetch_docs(module))

  defp type_exported?(module, name, arity) do
    case Code.Typespec.fetch_types(module) do
      {:ok, types} ->
        Enum.any?(types, fn {kind, {type, _, args}} ->
          kind in [:type, :opaque] and type == name and length(args) == arity
        end)

      :error ->
        false
    end
  end

  test "the docs' extras in mix.exs exist, with the README and at least six guides" do
    assert "README.md" in extras()
    assert Enum.count(extras(), &String.starts_with?(&1, "guides/")) >= 6

    for extra <- extras(), do: assert(File.exists?(Path.join(@root, extra)), "no #{extra}")

    guides =
      Path.wildcard(Path.join(@root, "guides/*.md")) |> Enum.map(&Path.relative_to(&1, @root))

    assert guides -- extras() == [], "guides that are not extras: #{inspect(guides -- extras())}"
  end

  test "the README stays short" do
    # As `wc -l` counts them.
    lines = read("README.md") |> String.graphemes() |> Enum.count(&(&1 == "\n"))
    assert lines <= 200, "README.md has #{lines} lines"
  end

  test "every link in the README, CONTRIBUTING.md and the guides resolves" do
    problems =
      for file <- markdown_files(),
          link <- links(read(file)),
          problem = link_problem(file, link),
          do: "#{file}: #{problem}"

    assert problems == []
  end

  test "every guide a moduledoc links to is an extra, and its anchors exist" do
    problems =
      for {module, text} <- moduledoc_texts(),
          link <- links(text),
          problem = link_problem(:moduledoc, link),
          do: "#{inspect(module)}: #{problem}"

    assert problems == []
  end

  test "every module and function named in backticks in the docs exists and is documented" do
    # What ExDoc renders: the Markdown files and the docs of modules that are not hidden.
    sources =
      Enum.map(markdown_files(), &{&1, read(&1)}) ++
        for {module, text} <- moduledoc_texts(),
            not hidden?(module),
            not String.starts_with?(inspect(module), "FLAMEK8sBackend.Test."),
            do: {inspect(module), text}

    problems =
      for {source, text} <- sources,
          span <- code_spans(text),
          problem <- reference_problems(span),
          do: "#{source}: #{problem}"

    assert problems == []
  end

  describe "the checks themselves" do
    test "find a missing file, a missing anchor and an anchor only one renderer makes" do
      assert link_problem("README.md", "guides/nope.md") =~ "no guides/nope.md"
      assert link_problem("README.md", "guides/runner-pods.md#nope") =~ "no heading"
      assert link_problem("README.md", "guides/runner-pods.md") == nil
      assert link_problem("README.md", @repo_url <> "blob/main/nope.yaml") =~ "no nope.yaml"
      assert link_problem(:moduledoc, "nope.md") =~ "not one of the docs' extras"

      assert {"the-parent-pod-s-identity", "the-parent-pods-identity"} in anchors(
               "## The parent pod's identity"
             )
    end

    test "find a module or a function that does not exist" do
      assert reference_problems("FLAMEK8sBackend.Nope") != []
      assert reference_problems("FLAMEK8sBackend.runner_manifests/9") != []
      assert reference_problems("t:FLAMEK8sBackend.BootError.nope/0") != []
      assert reference_problems("%FLAMEK8sBackend.BootError{}") == []
      assert reference_problems("t:FLAMEK8sBackend.BootError.t/0") == []
      assert reference_problems("FLAMEK8sBackend.Sweep") != []
    end
  end
end
