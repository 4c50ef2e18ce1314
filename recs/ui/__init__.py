"""`recs ui`: the side-by-side page (Streamlit) comparing the incumbent's lists with ours."""
